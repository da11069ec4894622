"""The content-addressed store: `<root>/<key>/{manifest.json, train/, eval/, report.json}`.

The key hashes everything that changes the tokens (see `store_key_inputs` in prepare.py) and
nothing else, so the same inputs reuse the same store and any change makes a new one. A store is
written into a temporary directory and renamed into place only when complete; on load, the
manifest's key and every shard's checksum are checked before a single row is trained on (a stat per
shard when it is unchanged since it was last hashed: smoldist/hash_cache.py).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

from smoldist.errors import StoreError
from smoldist.hash_cache import HashCache

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "eval")


def canonical_json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def compute_key(inputs: dict) -> str:
    return hashlib.sha256(canonical_json({"format_version": FORMAT_VERSION, **inputs}).encode()).hexdigest()[:20]


def store_dir(root: str | Path, key: str) -> Path:
    return Path(root) / key


def shard_checksums(split_dir: Path, hashes: HashCache | None = None) -> dict[str, dict]:
    sha256 = (hashes or HashCache(None)).sha256  # with a cache: a stat per shard unchanged since last hashed
    return {f.name: {"sha256": sha256(f), "bytes": f.stat().st_size} for f in sorted(split_dir.glob("*.arrow"))}


class StoreWriter:
    """Collects a store in `<root>/.tmp-<key>-<host>-<pid>` and renames it into place on `commit()`.

    Host and pid: two nodes sharing the root can have the same pid."""

    def __init__(self, root: str | Path, key: str):
        self.root, self.key = Path(root), key
        self.final = store_dir(root, key)
        self.tmp = self.root / f".tmp-{key}-{socket.gethostname()}-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)

    @property
    def scratch(self) -> Path:
        """Working files (token buffers, row chunks); removed before the store is committed."""
        return self.tmp / ".scratch"

    def write_split(self, name: str, write):
        """`write(directory)` fills the split's directory (smoldist.rows.write_rows); returns what it returns."""
        return write(self.tmp / name)

    def commit(self, manifest: dict, force: bool = False, hashes: HashCache | None = None) -> Path:
        shutil.rmtree(self.scratch, ignore_errors=True)
        manifest = dict(manifest, key=self.key, format_version=FORMAT_VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        manifest["shards"] = {s: shard_checksums(self.tmp / s, hashes) for s in SPLITS if (self.tmp / s).is_dir()}
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        if self.final.exists():
            if not force:  # another process finished the same key first: identical contents, keep theirs
                shutil.rmtree(self.tmp)
                return self.final
            trash = self.root / f".old-{self.key}-{os.getpid()}"
            os.rename(self.final, trash)
            shutil.rmtree(trash)
        try:
            os.rename(self.tmp, self.final)  # atomic on one filesystem: the store appears complete or not at all
        except OSError as e:  # lost a race: another builder renamed the same key into place first
            if force or e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (self.final / MANIFEST).is_file():
                raise
            shutil.rmtree(self.tmp)  # same key, same contents: keep the winner's
            return self.final
        if hashes is not None:
            hashes.moved(self.tmp, self.final)  # the shards were just hashed: training's verification is a stat each
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_manifest(path: Path) -> dict:
    try:
        return json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: no {MANIFEST}; not a complete store (rerun `smoldist prepare --force`)") from None
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}/{MANIFEST}: unreadable ({e}); rerun `smoldist prepare --force`") from None


def verify_store(path: Path, key: str, check_shards: bool = True, hashes: HashCache | None = None) -> dict:
    """The manifest of a complete store for `key`; refuses a store that was edited, truncated or mismatched."""
    manifest = read_manifest(path)
    if manifest.get("key") != key or manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: manifest is for key {manifest.get('key')} (format {manifest.get('format_version')}), "
            f"but the recipe needs {key} (format {FORMAT_VERSION}); rerun `smoldist prepare --force`"
        )
    if compute_key(manifest.get("inputs", {})) != key:
        raise StoreError(f"{path}/{MANIFEST}: its inputs do not hash to its key (edited?); rerun `smoldist prepare --force`")
    if check_shards:
        for split, expected in manifest.get("shards", {}).items():
            found = shard_checksums(path / split, hashes)
            for name, want in expected.items():
                got = found.get(name)
                if got is None:
                    raise StoreError(f"{path}/{split}/{name}: shard missing; rerun `smoldist prepare --force`")
                if got != want:
                    raise StoreError(f"{path}/{split}/{name}: checksum mismatch (truncated or modified); rerun `smoldist prepare --force`")
    return manifest


def load_split(path: Path, split: str):
    import datasets

    if not (path / split).is_dir():
        return None
    return datasets.load_from_disk(str(path / split))  # memory-mapped Arrow, nothing read into RAM
