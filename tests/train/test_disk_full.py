"""A full disk under a real run: output_dir on a 40 MB tmpfs, filled to less than a checkpoint (root only; slow).

The check before a save names the path and the bytes; a save that runs out of space anyway (the check told a
larger free space than there is) is reported as a full disk, not as torch's iostream error; both leave the last
complete checkpoint to resume from once there is room."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from smoldist.distributed.checkpoints import COMPLETE, directory_bytes
from smoldist.errors import DiskFullError
from smoldist.faults import FREE_BYTES
from tests.helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (and mount); the free-space check is covered by test_faults.py")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], capture_output=True, timeout=60
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False, timeout=60)


def train(recipe, out, max_steps, env=None) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "smoldist",
        "train",
        str(recipe),
        f"train.output_dir={out}",
        "train.per_device_train_batch_size=1",
        f"train.max_steps={max_steps}",
        "train.save_steps=2",
    ]
    return subprocess.run(
        args, capture_output=True, text=True, cwd=REPO, timeout=300, env=dict(os.environ, **(env or {}))
    )


def error_line(p: subprocess.CompletedProcess) -> str:
    return next(line for line in reversed(p.stderr.splitlines()) if line.startswith("smoldist: error:"))


def test_a_full_disk_is_named_before_and_during_a_save_and_the_run_resumes(tiny_recipe, small_disk):
    out = small_disk / "run"
    first = train(tiny_recipe, out, 2)
    assert first.returncode == 0, first.stderr[-3000:]
    size = directory_bytes(out / "checkpoint-2")
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - size // 2))  # half a checkpoint fits

    refused = train(tiny_recipe, out, 4)
    assert refused.returncode == DiskFullError.exit_code, refused.stderr[-3000:]
    line = error_line(refused)
    assert f"needs about {size:,} bytes in {out}" in line and "bytes free" in line and "checkpoint-2" in line, line
    assert not (out / "checkpoint-4").exists()

    # the check is told there is room: the write itself runs out of space (was: basic_ios::clear: iostream error)
    cut = train(tiny_recipe, out, 4, env={FREE_BYTES: str(10**12)})
    assert cut.returncode == DiskFullError.exit_code, cut.stderr[-3000:]
    line = error_line(cut)
    assert line.startswith(f"smoldist: error: disk full: writing checkpoint-4 in {out} failed"), line
    assert "Traceback" not in cut.stderr, cut.stderr[-3000:]
    assert not (out / "checkpoint-4").exists()  # the partial checkpoint was removed, its space given back
    assert (out / "checkpoint-2" / COMPLETE).is_file()

    filler.unlink()
    again = train(tiny_recipe, out, 4)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout and "checkpoint-2" in again.stdout
    assert (out / "checkpoint-4" / COMPLETE).is_file()
