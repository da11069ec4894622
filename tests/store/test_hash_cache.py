"""Start-up that does not grow with the data: an unchanged store and unchanged sources cost a stat per
file, not a read; a shard changed in any way is still refused."""

from __future__ import annotations

import builtins
import os
import time

import pytest

from smoldist.config import load_recipe
from smoldist.errors import StoreError
from smoldist.store.build import prepare


def files_read_during(monkeypatch, fn):
    """Run fn() and return the paths it opened for reading in binary mode (what hashing does)."""
    seen, real_open = [], builtins.open

    def spy(file, mode="r", *a, **k):
        if "rb" in str(mode):
            seen.append(os.path.abspath(str(file)))
        return real_open(file, mode, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", spy)
        fn()
    return seen


def settle(*paths) -> None:
    """Backdate files (and every file under folders) by 10 s: the cache trusts only stats older than SETTLE_S."""
    old = time.time() - 10
    for p in paths:
        for f in [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]:
            os.utime(f, (old, old))


def test_reuse_with_verification_reads_no_shard_and_no_source(tiny_recipe, conversations_file, monkeypatch):
    r = load_recipe(tiny_recipe)
    first = prepare(r.model, r.data, verbose=False)
    settle(first.path, conversations_file)
    prepare(r.model, r.data, verbose=False, verify_shards=True)  # hashed once more, now old enough to be remembered
    read = files_read_during(monkeypatch, lambda: prepare(r.model, r.data, verbose=False, verify_shards=True))
    shards = [os.path.abspath(p) for p in first.path.rglob("*.arrow")]
    assert shards
    assert not set(read) & set(shards), "an unchanged shard was hashed again"
    assert os.path.abspath(conversations_file) not in read, "an unchanged source was hashed again"


def test_source_edited_is_hashed_again(tiny_recipe, conversations_file):
    r = load_recipe(tiny_recipe)
    first = prepare(r.model, r.data, verbose=False)
    conversations_file.write_text(conversations_file.read_text().replace("snow", "SNOW"))  # same size, new content
    assert prepare(r.model, r.data, verbose=False).path != first.path


def test_shard_modified_in_place_with_size_and_mtime_restored_is_refused(tiny_recipe):
    r = load_recipe(tiny_recipe)
    path = prepare(r.model, r.data, verbose=False).path
    settle(path)
    prepare(r.model, r.data, verbose=False)  # verified once: the cache holds every shard
    shard = next((path / "train").glob("*.arrow"))
    st = os.stat(shard)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only the ctime tells
    assert os.path.getsize(shard) == st.st_size
    with pytest.raises(StoreError, match="checksum mismatch"):
        prepare(r.model, r.data, verbose=False)


def test_truncated_shard_is_refused_with_the_cache_present(tiny_recipe):
    r = load_recipe(tiny_recipe)
    path = prepare(r.model, r.data, verbose=False).path
    settle(path)
    prepare(r.model, r.data, verbose=False)
    assert (path.parent / ".cache" / "sha256.json").is_file()
    shard = next((path / "train").glob("*.arrow"))
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(StoreError, match="checksum mismatch"):
        prepare(r.model, r.data, verbose=False)


def test_damaged_cache_file_is_ignored(tiny_recipe):
    r = load_recipe(tiny_recipe)
    first = prepare(r.model, r.data, verbose=False)
    settle(first.path)
    prepare(r.model, r.data, verbose=False)
    (first.path.parent / ".cache" / "sha256.json").write_text("{not json")
    again = prepare(r.model, r.data, verbose=False)
    assert again.reused and again.path == first.path
