"""One builder per store, and no collective while it builds.

Every process of a job that needs a missing store calls `prepare()`. The first to take a POSIX
lock (`fcntl.lockf`) on `<store root>/.lock-<key>` builds it; the others poll, every second, for the
store's manifest (then they reuse it) or for the lock (its holder died: the kernel released the
lock, so one of them builds instead), printing who they wait for every `SMOLDIST_STORE_WAIT_REPORT_S`
seconds (default 30). Nobody sits in a barrier, so a build longer than `train.ddp_timeout` (or
NCCL's 10 minutes) cannot time the job out.

Across nodes the lock works where the store root is on a filesystem that implements POSIX locks
between hosts (NFS with lockd, Lustre mounted with `flock`, GPFS, BeeGFS). Where it does not:
- nodes that do not share the root at all each build their own copy (one builder per node);
- a shared root whose locks are node-local (Lustre `localflock`) or refused (ENOLCK/ENOSYS/
  EOPNOTSUPP: a warning is printed) lets one builder per node work at once; each writes its own
  temp dir (`.tmp-<key>-<host>-<pid>`) and the first rename wins, the others reuse the winner's
  store. Correct, only the work is repeated. Run `smoldist prepare` (or `smoldist submit`, which
  does) before the training job to avoid even that.

Fault injection (smoldist/faults.py): `SMOLDIST_TEST_BUILD_DELAY_S=N` makes the lock holder sleep N seconds
before building (to show that waiting ranks survive a build longer than `ddp_timeout`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smoldist import faults
from smoldist.store.manifest import MANIFEST

REPORT_ENV = "SMOLDIST_STORE_WAIT_REPORT_S"
POLL_S = 1.0
_UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
# the file behind our handle was removed by its holder (NFSv3 answers ESTALE for the old inode): open it again
_REOPEN = {errno.ESTALE, errno.ENOENT}


def _try_lock(fd: int) -> bool | None:
    """True: locked. False: someone else holds it. None: this filesystem does not do locks."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        if e.errno in _UNSUPPORTED:
            return None
        raise


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


def _same_file(fd: int, path: Path) -> bool:
    """The locked file is still the one at `path` (its holder unlinks it when done; a new one may take its place)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError as e:
        if e.errno in _REOPEN:
            return False
        raise


@contextmanager
def build_turn(root: Path, key: str, final: Path, force: bool = False, verbose: bool = True) -> Iterator[bool]:
    """Wait for our turn to build `final`. Yields True if the store appeared meanwhile (reuse it, unless `force`),
    False if this process now holds the lock and must build it. The lock is released on exit (or on death),
    and its file removed, so a store root holds no lock files once nobody builds."""
    root.mkdir(parents=True, exist_ok=True)
    lock_path = root / f".lock-{key}"
    fd, held = -1, False
    t0 = time.monotonic()
    every = float(os.environ.get(REPORT_ENV, "30"))
    next_report = t0  # say at once that we wait, then every `every` seconds
    try:
        while True:
            if not force and (final / MANIFEST).is_file():
                yield True
                return
            if fd < 0:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                got = _try_lock(fd)
            except OSError as e:
                if e.errno not in _REOPEN:
                    raise
                os.close(fd)
                fd = -1
                continue
            if got is None:
                print(
                    f"smoldist prepare: warning: {root} does not support file locks; building without one "
                    f"(other nodes may build the same store at once; the first to finish wins)",
                    file=sys.stderr,
                    flush=True,
                )
                break
            if got and _same_file(fd, lock_path):
                held = True
                break
            if got:  # we locked a file its holder had already removed: open the current one
                os.close(fd)
                fd = -1
                continue
            if verbose and time.monotonic() >= next_report:
                print(
                    f"smoldist prepare: waiting for {_holder(lock_path)} to build store {final} "
                    f"({time.monotonic() - t0:.0f} s so far; no collective is pending)",
                    flush=True,
                )
                next_report = time.monotonic() + every
            time.sleep(POLL_S)
        if not force and (final / MANIFEST).is_file():  # built by the holder we waited for
            yield True
            return
        if held:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        faults.pause(faults.BUILD_DELAY_S)
        yield False
    finally:
        if held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)  # before releasing: a waiter that then locks this inode sees it is gone
        if fd >= 0:
            os.close(fd)  # releases the lock
