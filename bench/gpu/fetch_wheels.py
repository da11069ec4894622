"""Download, here, the wheels the GPU machine lacks (it has no network), into the git-ignored .whl/.

    python bench/gpu/fetch_wheels.py            # then: du -sh .whl (the device tool carries 64 MiB per call)

What: trl, datasets, deepspeed, wandb and transformers at the versions installed in THIS environment (the stack the
CPU suite passed on), plus every package they need that the GPU image does not hold (walked from this environment's
metadata). The GPU image's packages (device KINDS.md, read 2026-11-17) are taken as they are there. Wheels are for
CPython 3.12 on x86-64 manylinux; deepspeed has only an sdist, so its pure-Python wheel is built here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEST = REPO / ".whl"
WANTED = ["trl", "datasets", "deepspeed", "wandb", "transformers"]
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


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed() -> dict[str, str]:
    """name -> version installed here, for WANTED and their requirements missing on the GPU image."""
    todo, out = list(WANTED), {}
    while todo:
        name = norm(todo.pop())
        if name in out or (name in ON_GPU_IMAGE and name not in WANTED):
            continue
        dist = metadata.distribution(name)
        out[name] = dist.version
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return out


def main() -> int:
    DEST.mkdir(exist_ok=True)
    for old in DEST.glob("*.whl"):
        old.unlink()
    pins = needed()
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
            str(DEST),
            *(f"{n}=={pins[n]}" for n in binary),
        ],
        check=True,
    )
    # deepspeed: sdist only; its wheel is pure Python (ops are JIT-built on the machine that runs them)
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(DEST), f"deepspeed=={pins['deepspeed']}"], check=True)
    size = sum(p.stat().st_size for p in DEST.glob("*.whl"))
    print(f"{len(list(DEST.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {DEST}")
    return 0 if size < 60 * 2**20 else 1


if __name__ == "__main__":
    sys.exit(main())
