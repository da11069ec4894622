"""The one results JSON of a device script (bench/gpu/*.sh), rewritten after every step so nothing is lost.

    python bench/gpu/results.py init JSON SCRIPT MODE             # {"script", "mode", "started", "checks": {}}
    python bench/gpu/results.py step JSON NAME RC SECONDS LIMIT   # after a step: its exit, time, limit
    python bench/gpu/results.py summary JSON                      # one line per check (the tail the device returns)
    python bench/gpu/results.py requirements -                    # requirements the installed versions miss

A step's own program records its figures with `record()` (same file, key `checks.NAME`); `step` then adds the
exit status and wall seconds, and marks a step that died or overran without recording anything as failed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

LIBS = ("torch", "transformers", "trl", "accelerate", "deepspeed", "peft", "datasets", "wandb", "triton")
SKIPPED_NO_CUDA = "no cuda"  # what a CUDA-only check records in a CPU dry run (--cpu-smoke)


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"checks": {}}


def save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)  # atomic: a kill mid-write leaves the previous file whole


def record(path: str | Path | None, name: str, entry: dict, top: dict | None = None) -> None:
    """Merge `entry` into checks[name] (and `top` into the file's top level) of the results JSON at `path`."""
    if path is None:
        return
    path = Path(path)
    data = load(path)
    data.setdefault("checks", {}).setdefault(name, {}).update(entry)
    data.update(top or {})
    save(path, data)


def results_path() -> str | None:
    """The results JSON the calling script named (env RESULTS), if any."""
    return os.environ.get("RESULTS")


def smoke() -> bool:
    return os.environ.get("SMOKE") == "1"


def environment() -> dict:
    """{"device", "versions"}: the device this process sees and the versions of the libraries it imports."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {}
    for lib in LIBS:
        try:
            versions[lib] = version(lib)
        except PackageNotFoundError:
            versions[lib] = None
    return {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "versions": versions}


def unmet_requirements(names: tuple[str, ...] = LIBS) -> list[str]:
    """Requirements of `names` (and of smoldist's stack) that the installed versions do not satisfy: on the GPU
    image, the carried wheels meet the image's own packages, whose versions nobody pinned."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    unmet = []
    for name in names:
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = distribution(req.name).version
            except PackageNotFoundError:
                unmet.append(f"{name} needs {req}: not installed")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                unmet.append(f"{name} needs {req}: have {have}")
    return unmet


def step(path: Path, name: str, rc: int, seconds: float, limit: int) -> None:
    data = load(path)
    entry = data.setdefault("checks", {}).setdefault(name, {})
    entry.update(exit=rc, seconds=round(seconds, 1), limit_s=limit)
    if rc in (124, 137):
        entry.update(ok=False, error=f"timed out after {limit} s")
    elif "ok" not in entry:
        entry.update(ok=rc == 0, error=None if rc == 0 else f"exit {rc} before recording a result")
    elif rc and entry.get("ok") and not entry.get("skipped"):
        entry.update(ok=False, error=f"exit {rc}")
    save(path, data)


def summary(path: Path) -> str:
    data = load(path)
    lines = [f"{path.name}: {data.get('script')} ({data.get('mode')}), device {data.get('device')}"]
    for name, c in data.get("checks", {}).items():
        state = "skipped: " + c["skipped"] if c.get("skipped") else {True: "ok", False: "FAIL", None: "?"}[c.get("ok")]
        figs = ", ".join(f"{k} {v}" for k, v in c.items() if k in c.get("figures", ()))
        lines.append(f"  {name:24s} {state:18s} {c.get('seconds', '-')!s:>6s} s  {figs} {c.get('error') or ''}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    cmd, path = argv[0], Path(argv[1])
    if cmd == "init":
        save(
            path,
            {
                "script": argv[2],
                "mode": argv[3],
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "checks": {},
            },
        )
    elif cmd == "step":
        step(path, argv[2], int(argv[3]), float(argv[4]), int(argv[5]))
    elif cmd == "requirements":  # printed into the log after the wheel install; never fails the script
        print("\n".join(unmet_requirements()) or "every requirement of " + ", ".join(LIBS) + " is met")
    elif cmd == "summary":
        print(summary(path))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
