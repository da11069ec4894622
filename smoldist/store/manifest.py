"""A store's manifest: `<root>/<key>/{manifest.json, train/, eval/, report.json}`, its key, and its verification.

The key hashes everything that changes the tokens (see `store_key_inputs` in plan.py) and nothing
else, so the same inputs reuse the same store and any change makes a new one. On load, the
manifest's key and every shard's checksum are checked before a single row is trained on (a stat per
shard when it is unchanged since it was last hashed: hash_cache.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from smoldist.errors import StoreError
from smoldist.store.hash_cache import HashCache

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
        raise StoreError(
            f"{path}/{MANIFEST}: its inputs do not hash to its key (edited?); rerun `smoldist prepare --force`"
        )
    if check_shards:
        for split, expected in manifest.get("shards", {}).items():
            found = shard_checksums(path / split, hashes)
            for name, want in expected.items():
                got = found.get(name)
                if got is None:
                    raise StoreError(f"{path}/{split}/{name}: shard missing; rerun `smoldist prepare --force`")
                if got != want:
                    raise StoreError(
                        f"{path}/{split}/{name}: checksum mismatch (truncated or modified); "
                        "rerun `smoldist prepare --force`"
                    )
    return manifest


def load_split(path: Path, split: str):
    import datasets

    if not (path / split).is_dir():
        return None
    return datasets.load_from_disk(str(path / split))  # memory-mapped Arrow, nothing read into RAM


def library_versions() -> dict:
    """The versions of the libraries that made a store or a run (the manifest and W&B record them)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("smoldist", "transformers", "tokenizers", "datasets", "trl", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
