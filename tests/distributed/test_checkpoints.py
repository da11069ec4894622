"""Checkpoint bookkeeping without training: rotation keeps the newest complete checkpoints only once they are marked,
and the room check before a save names the path and the bytes (free space faked through smoldist/faults.py)."""

from __future__ import annotations

from smoldist.distributed.checkpoints import (
    check_room,
    directory_bytes,
    free_bytes,
    last_complete_checkpoint,
    mark_complete,
    rotate_checkpoints,
)
from smoldist.faults import FREE_BYTES


def make(out, step, complete=True, size=10):
    path = out / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x" * size)
    if complete:
        mark_complete(path, step, 1)
    return path


def test_rotation_keeps_the_newest_complete_checkpoints_and_drops_older_half_written_ones(tmp_path):
    for step, complete in ((2, True), (3, False), (4, True), (6, True), (8, False)):
        make(tmp_path, step, complete)
    deleted = rotate_checkpoints(tmp_path, 1, keep=str(tmp_path / "checkpoint-2"))  # 2: the best one, kept
    assert sorted(p.name for p in deleted) == ["checkpoint-3", "checkpoint-4"]
    # checkpoint-8 is unmarked and newer: a save under way (or cut short), never deleted by a rotation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-6", "checkpoint-8"]
    assert last_complete_checkpoint(str(tmp_path)).endswith("checkpoint-6")
    assert last_complete_checkpoint(str(tmp_path), before=6).endswith("checkpoint-2")


def test_rotation_without_a_complete_checkpoint_deletes_nothing(tmp_path):
    make(tmp_path, 2, complete=False)
    assert rotate_checkpoints(tmp_path, 1) == [] and (tmp_path / "checkpoint-2").is_dir()


def test_the_room_check_names_the_path_the_bytes_and_the_resume_point(tmp_path, monkeypatch):
    last = make(tmp_path, 2, size=5000)
    needed = directory_bytes(last)
    assert check_room(tmp_path, 4, needed) is None  # the real disk has room for 5 kB
    monkeypatch.setenv(FREE_BYTES, "1234")
    assert free_bytes(tmp_path / "not" / "made" / "yet") == 1234
    line = check_room(tmp_path, 4, needed)
    assert line.startswith(f"disk full: checkpoint-4 needs about {needed:,} bytes in {tmp_path}"), line
    assert "1,234 bytes free" in line and line.endswith(str(last))
    assert free_bytes(tmp_path, measured=True) > 1234  # what decides whether a failed write ran out of space
