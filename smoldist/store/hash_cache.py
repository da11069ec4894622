"""sha256 of files, remembered by their stat: a file unchanged since it was last hashed costs one stat.

Used for the sources (the store key) and the store's shards (verification before training), so that
start-up does not grow with the data and only the first process of a job reads the files; the others,
started after it (main process first), find the hashes here. An entry is used only while the file's
size, mtime, ctime and inode all match: editing a file in place changes its ctime, which no user can
set back, so a modified or truncated file is always hashed again. A file hashed within `SETTLE_S` of its
mtime is not remembered: a rewrite inside the filesystem's timestamp resolution (1 s on some Lustre setups; NFS
attribute caches serve stale stats) could leave its stat unchanged. The cache lives in the store root
(`<store>/.cache/sha256.json`), shared by every node that shares the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

CACHE_FILE = Path(".cache") / "sha256.json"
SETTLE_S = 2.0  # a stat younger than this may not yet tell a rewrite apart (coarse or cached timestamps)


def stat_key(path: str | Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class HashCache:
    """`sha256(path)` that reads the file only when its stat differs from when it was last hashed."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = self._read() if self.path else {}
        self.hashed: list[str] = []  # files actually read by this instance (tests and benchmarks look)
        self.dirty = False

    @classmethod
    def for_store(cls, root: str | Path) -> HashCache:
        return cls(Path(root) / CACHE_FILE)

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # missing or damaged: hash again

    def sha256(self, path: str | Path) -> str:
        name, key = os.path.abspath(path), stat_key(path)
        entry = self.entries.get(name)
        if entry and entry.get("stat") == key:
            return entry["sha256"]
        started = time.time()
        digest = file_sha256(path)
        settled = started - key[1] / 1e9 >= SETTLE_S
        if settled and stat_key(path) == key:  # old enough to trust its stat, and not written to while we read it
            self.entries[name] = {"stat": key, "sha256": digest}
            self.dirty = True
        self.hashed.append(name)
        return digest

    def moved(self, old_dir: str | Path, new_dir: str | Path) -> None:
        """Entries under `old_dir` follow a directory rename (the files' inodes and ctimes do not change)."""
        old, new = os.path.abspath(old_dir) + os.sep, os.path.abspath(new_dir) + os.sep
        for name in [n for n in self.entries if n.startswith(old)]:
            self.entries[new + name[len(old) :]] = self.entries.pop(name)
            self.dirty = True

    def save(self) -> None:
        """Merge with what other processes wrote, drop entries of vanished files, write atomically."""
        if not (self.path and self.dirty):
            return
        merged = {n: e for n, e in {**self._read(), **self.entries}.items() if os.path.exists(n)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(merged))
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError:
            pass  # a read-only store root: verification still works, it just hashes again next time
