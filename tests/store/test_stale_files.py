"""Shared filesystems: a lock file whose inode went stale (NFSv3 ESTALE) is reopened, not fatal, and a file
hashed within the filesystem's timestamp resolution of its mtime is not trusted from the cache later."""

from __future__ import annotations

import errno
import os
import time

from smoldist.store import lock
from smoldist.store.hash_cache import HashCache


def stale_once(monkeypatch, name: str):
    """Make `lock.<name>` (an os/fcntl call) raise ESTALE the first time, then behave; returns the call log."""
    module = lock.fcntl if name == "lockf" else lock.os
    real, calls = getattr(module, name), []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)
    return calls


def test_lock_reopens_after_a_stale_handle_on_lockf(tmp_path, monkeypatch):
    calls = stale_once(monkeypatch, "lockf")
    with lock.build_turn(tmp_path, "k", tmp_path / "store", verbose=False) as reuse:
        assert reuse is False  # this process holds the lock now and builds
    assert len(calls) == 2  # the stale handle was dropped and the lock taken on a fresh open


def test_lock_reopens_after_a_stale_handle_on_fstat(tmp_path, monkeypatch):
    stale_once(monkeypatch, "fstat")
    with lock.build_turn(tmp_path, "k", tmp_path / "store", verbose=False) as reuse:
        assert reuse is False
    assert not (tmp_path / ".lock-k").exists()


def test_a_file_hashed_right_after_its_write_is_hashed_again(tmp_path):
    f = tmp_path / "shard.arrow"
    f.write_bytes(b"x" * 1000)
    cache = HashCache(tmp_path / "cache.json")
    digest = cache.sha256(f)
    assert cache.sha256(f) == digest
    # within the timestamp resolution a rewrite could leave the stat unchanged: not trusted yet
    assert cache.hashed == [str(f), str(f)]
    old = time.time() - 10
    os.utime(f, (old, old))  # the file last changed 10 s ago: its stat now identifies its content
    cache.sha256(f)
    assert cache.sha256(f) == digest
    assert cache.hashed == [str(f)] * 3
    cache.save()
    assert HashCache(tmp_path / "cache.json").sha256(f) == digest  # kept across processes too
