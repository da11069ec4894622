"""Download, here, the wheels the GPU machine lacks (it has no network), into the git-ignored .whl/.

    python bench/gpu/fetch_wheels.py                          # download; prints wheels + tracked tree vs 64 MiB
    python bench/gpu/fetch_wheels.py --check                  # only check .whl/ against requirements.lock
    python bench/gpu/fetch_wheels.py --without transformers    # use the GPU image's transformers (5.17) instead

What: trl, datasets, deepspeed, wandb, transformers, peft and accelerate at the versions requirements.lock pins (the
set CI passed on), plus every package they need that the GPU image does not hold (walked from this environment's
metadata, each at its locked version). The GPU image's packages (device KINDS.md, read 2026-11-17) are taken as they
are there. Wheels are for CPython 3.12 on x86-64 manylinux; deepspeed has only an sdist, so its pure-Python wheel is
built here.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.lock_drift import norm, read_lock  # noqa: E402  (the one reader of requirements.lock)

DEST = REPO / ".whl"
CARRY_LIMIT = 64 * 2**20  # what one device call carries: tracked tree + carried paths
# peft: the image's version is unread; accelerate: the image has 1.15, CI another (its FSDP2 policy differs)
WANTED = ["trl", "datasets", "deepspeed", "wandb", "transformers", "peft", "accelerate"]
ON_GPU_IMAGE = {
    "absl-py",
    "accelerate",
    "aiofiles",
    "aiohappyeyeballs",
    "aiohttp",
    "aiosignal",
    "annotated-doc",
    "anyio",
    "attrs",
    "botorch",
    "build",
    "certifi",
    "charset-normalizer",
    "chex",
    "click",
    "cloudpickle",
    "cmake",
    "colorama",
    "contourpy",
    "coverage",
    "cycler",
    "cython",
    "einops",
    "filelock",
    "flatbuffers",
    "fonttools",
    "frozenlist",
    "fsspec",
    "grpcio",
    "h11",
    "h5py",
    "hf-xet",
    "httpcore",
    "httpx",
    "huggingface-hub",
    "humanize",
    "hypothesis",
    "idna",
    "iniconfig",
    "jinja2",
    "joblib",
    "kiwisolver",
    "markdown",
    "markdown-it-py",
    "markupsafe",
    "matplotlib",
    "mdurl",
    "ml-dtypes",
    "mpmath",
    "msgpack",
    "multidict",
    "networkx",
    "ninja",
    "numpy",
    "nvidia-ml-py",
    "packaging",
    "pandas",
    "peft",
    "pillow",
    "pip",
    "pluggy",
    "propcache",
    "protobuf",
    "psutil",
    "pyarrow",
    "py-cpuinfo",
    "pygments",
    "pyparsing",
    "pytest",
    "python-dateutil",
    "pyyaml",
    "regex",
    "requests",
    "rich",
    "safetensors",
    "scipy",
    "setuptools",
    "shellingham",
    "six",
    "sympy",
    "tokenizers",
    "torch",
    "tqdm",
    "triton",
    "typer",
    "typing-extensions",
    "urllib3",
    "wheel",
    "wrapt",
    "xxhash",
    "yarl",
    "zipp",
}
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35, 39)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]


def needed(wanted: list[str], lock: dict[str, str]) -> dict[str, str]:
    """name -> locked version, for `wanted` and their requirements missing on the GPU image."""
    todo, out = list(wanted), {}
    while todo:
        name = norm(todo.pop())
        if name in out or (name in ON_GPU_IMAGE and name not in wanted):
            continue
        if name not in lock:
            sys.exit(f"{name} is needed on the GPU machine but requirements.lock does not pin it: run `make lock`")
        dist = metadata.distribution(name)
        out[name] = lock[name]
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return out


def tracked_bytes() -> int:
    """Bytes of the tracked tree (what every device call carries besides .whl/)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / f.decode()).stat().st_size for f in files if f and (REPO / f.decode()).is_file())


def wheel_name(path: Path) -> tuple[str, str]:
    """(normalised project name, version) from a wheel's file name."""
    name, version = path.name.split("-")[:2]
    return norm(name), version


def check(dest: Path, pins: dict[str, str]) -> list[str]:
    """What is wrong with the wheel set in `dest` against `pins`: missing, extra, duplicated or other versions."""
    have: dict[str, list[str]] = {}
    for w in sorted(dest.glob("*.whl")):
        n, v = wheel_name(w)
        have.setdefault(n, []).append(v)
    problems = [f"missing: {n}=={v}" for n, v in sorted(pins.items()) if n not in have]
    problems += [
        f"two versions of {n}: {', '.join(vs)} (pip install stops on both)" for n, vs in have.items() if len(vs) > 1
    ]
    problems += [
        f"{n}: wheel {vs[0]}, locked {pins[n]}"
        for n, vs in have.items()
        if n in pins and len(vs) == 1 and vs[0] != pins[n]
    ]
    problems += [f"not needed: {n}" for n in have if n not in pins]
    return problems


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", type=Path, default=DEST, help="folder for the wheels (default: %(default)s)")
    ap.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="NAME",
        help=f"leave NAME out (the GPU image's own copy is used); repeatable; of {', '.join(WANTED)}",
    )
    ap.add_argument(
        "--check",
        action="store_true",
        help="download nothing: check the wheels already in --dest against requirements.lock",
    )
    args = ap.parse_args(argv)
    for name in args.without:
        if norm(name) not in WANTED:
            ap.error(f"--without: unknown '{name}'; choose from {', '.join(WANTED)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dest = args.dest.resolve()
    pins = needed([n for n in WANTED if n not in {norm(w) for w in args.without}], read_lock())
    if not args.check:
        download(dest, pins)
    problems = check(dest, pins)
    size, tree = sum(p.stat().st_size for p in dest.glob("*.whl")), tracked_bytes()
    print(
        f"{len(list(dest.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {dest}; tracked tree "
        f"{tree / 2**20:.1f} MiB; together {(size + tree) / 2**20:.1f} MiB of the {CARRY_LIMIT // 2**20} MiB a call "
        "carries"
    )
    for line in problems:
        print("  " + line)
    return 0 if not problems and size + tree < CARRY_LIMIT else 1


def download(dest: Path, pins: dict[str, str]) -> None:
    dest.mkdir(exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    print("carrying:", ", ".join(f"{k}=={v}" for k, v in sorted(pins.items())))
    pip = [sys.executable, "-m", "pip"]
    binary = [n for n in pins if n != "deepspeed"]
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run(
        [
            *pip,
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *plat,
            "-d",
            str(dest),
            *(f"{n}=={pins[n]}" for n in binary),
        ],
        check=True,
    )
    if "deepspeed" in pins:  # sdist only; its wheel is pure Python (ops are JIT-built on the machine that runs them)
        subprocess.run(
            [*pip, "wheel", "-q", "--no-deps", "-w", str(dest), f"deepspeed=={pins['deepspeed']}"], check=True
        )


if __name__ == "__main__":
    sys.exit(main())
