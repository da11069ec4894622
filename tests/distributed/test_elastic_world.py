"""Elastic resume, fast part: which world sizes can continue a checkpoint, and refusing before anything loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from smoldist.cli import main
from smoldist.distributed.checkpoints import COMPLETE, rng_file, saved_world
from smoldist.distributed.elastic import check_resume_world, working_world_sizes
from smoldist.errors import RecipeError
from tests.helpers import REPO


def fake_checkpoint(root, step: int, world: int):
    """A marked checkpoint saved on `world` processes (the world check reads only the marker)."""
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / COMPLETE).write_text(json.dumps({"step": step, "world_size": world}))
    return path


def test_world_sizes_that_divide_the_global_batch():
    assert working_world_sizes(512, 1, 128) == [1, 2, 4]
    assert working_world_sizes(12 * 1024, 1, 1024) == [1, 2, 3, 4, 6, 12]
    assert working_world_sizes(512, 3, 128) == []


def test_saved_world_from_marker_or_rng_files(tmp_path):
    assert saved_world(fake_checkpoint(tmp_path, 4, 2)) == 2
    old = tmp_path / "checkpoint-9"  # written before the marker recorded the world
    old.mkdir()
    (old / COMPLETE).write_text(json.dumps({"step": 9}))
    for r in range(3):
        (old / f"rng_state_{r}.pth").write_bytes(b"")
    assert saved_world(old) == 3
    assert rng_file(old, 2).name == "rng_state_2.pth" and rng_file(old, 3) is None


def test_resume_onto_a_world_that_does_not_divide_names_the_arithmetic_and_the_sizes(tmp_path):
    ckpt = str(fake_checkpoint(tmp_path, 4, 2))
    assert check_resume_world(ckpt, 512, 1, 128, 4) == 2
    with pytest.raises(RecipeError) as e:
        check_resume_world(ckpt, 512, 1, 128, 3)
    msg = str(e.value)
    assert "saved on 2 processes) on 3 processes" in msg
    assert (
        "512 / (per_device_train_batch_size 1 x seq_len 128) = 4 micro-batches per optimiser step, not divisible by 3"
    ) in msg
    assert "world sizes that work: 1, 2, 4" in msg


def test_train_refuses_before_preparing_or_loading_anything(tiny_recipe, tmp_path):
    """A real `smoldist train`: the check runs before the store is built and before the checkpoint is read."""
    out = tmp_path / "run"
    fake_checkpoint(out, 4, 2)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "smoldist",
            "train",
            str(tiny_recipe),
            f"train.output_dir={out}",
            "train.per_device_train_batch_size=3",
            "train.global_batch_tokens=512",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        timeout=300,
    )
    assert p.returncode != 0
    assert "cannot resume" in p.stderr, p.stderr[-2000:]
    assert "no world size works with per_device_train_batch_size=3" in p.stderr
    assert "Nothing was loaded" in p.stderr
    assert not (tmp_path / "store").exists()  # refused before the store was even prepared


def test_submit_takes_a_node_range_and_rejects_a_bad_one(tiny_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["submit", str(tiny_recipe), "--dry-run", "--nodes", "1-2"]) == 0  # planning only: in this process
    out = capsys.readouterr().out
    assert "--nodes=1-2" in out and "slurm/train.sbatch" in out
    with pytest.raises(SystemExit) as bad:
        main(["submit", str(tiny_recipe), "--dry-run", "--nodes", "2-1"])
    assert bad.value.code == 2 and "give N or MIN-MAX with 0 < MIN <= MAX" in capsys.readouterr().err
