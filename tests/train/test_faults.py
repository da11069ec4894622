"""Faults inside one training process: a non-finite loss or weights stop the run before anything poisoned is saved,
a checkpoint rotation never leaves nothing to resume from, a save that cannot fit is refused by name, and a recipe
that would train nothing or past the model's positions is refused before work (docs/reliability.md)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from smoldist.distributed.checkpoints import COMPLETE, last_complete_checkpoint
from smoldist.errors import DiskFullError, NonFiniteError
from smoldist.faults import FREE_BYTES, KILL_BEFORE_MARK_AT_STEP, NAN_LOSS_AT_STEP
from smoldist.train.wandb_offline import read_run
from tests.helpers import REPO


def train(recipe, out, *overrides, env=None) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "smoldist",
        "train",
        str(recipe),
        f"train.output_dir={out}",
        "train.per_device_train_batch_size=1",
        *overrides,
    ]
    return subprocess.run(
        args, capture_output=True, text=True, cwd=REPO, timeout=300, env=dict(os.environ, **(env or {}))
    )


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def poison_one_weight(checkpoint) -> None:
    """A NaN in one weight of a saved checkpoint, as a bit flip or an fp16/bf16 overflow would leave it."""
    from safetensors.torch import load_file, save_file

    path = checkpoint / "model.safetensors"
    tensors = load_file(path)
    name = next(n for n in tensors if "layers.0.mlp" in n)
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, path, metadata={"format": "pt"})


def test_nan_weights_in_the_latest_checkpoint_stop_the_resumed_run_with_one_line(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    first = train(tiny_recipe, out, "train.max_steps=4", "train.save_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    poison_one_weight(out / "checkpoint-4")
    model_before = sha256(out / "model.safetensors")

    p = train(tiny_recipe, out, "train.max_steps=8", "train.save_steps=2")
    # was: exit 0, `loss 0.0000` at every step, two more checkpoints and a final model full of NaN
    assert p.returncode == NonFiniteError.exit_code, p.stdout[-2000:] + p.stderr[-3000:]
    lines = [line for line in p.stderr.splitlines() if line.startswith("smoldist: error:")]
    assert len(lines) == 1 and "step 5" in lines[0] and "weights" in lines[0], p.stderr[-3000:]
    assert "checkpoint-4" in lines[0] and "checkpoint-2" in lines[0], lines[0]  # the poisoned one, the one to use
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "loss 0.0000" not in p.stdout, p.stdout[-2000:]
    assert not (out / "checkpoint-6").exists() and sha256(out / "model.safetensors") == model_before
    assert last_complete_checkpoint(str(out)).endswith("checkpoint-4")


def test_a_nan_loss_stops_at_its_step_before_it_is_applied_or_saved(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    p = train(
        tiny_recipe,
        out,
        "train.max_steps=6",
        "train.save_steps=2",
        "tracking.wandb.mode=offline",
        env={NAN_LOSS_AT_STEP: "3"},
    )
    assert p.returncode == NonFiniteError.exit_code, p.stdout[-2000:] + p.stderr[-3000:]
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("smoldist: error:") and "step 3" in line and "loss" in line, p.stderr[-3000:]
    assert "learning_rate" in line and "bf16" in line, line  # what to try
    rows = out / "nonfinite-step-3" / "rank-0.pt"
    assert str(rows.parent) in line and rows.is_file(), line  # the rows that step trained on
    assert not (out / "checkpoint-4").exists() and not (out / "model.safetensors").exists()
    assert last_complete_checkpoint(str(out)).endswith("checkpoint-2")
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    summary = read_run(run_file).summary  # W&B records why the run stopped
    assert "step 3" in summary["smoldist/failure"] and summary["smoldist/exit_code"] == NonFiniteError.exit_code


def test_rotation_never_deletes_the_last_complete_checkpoint_before_the_new_one_is_complete(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    overrides = ("train.max_steps=6", "train.save_steps=2", "train.save_total_limit=1")
    killed = train(tiny_recipe, out, *overrides, env={KILL_BEFORE_MARK_AT_STEP: "4"})
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL inside the save of checkpoint-4
    assert not (out / "checkpoint-4" / COMPLETE).exists()
    # was: checkpoint-2 deleted by the rotation inside the save of checkpoint-4, nothing to resume from
    assert (out / "checkpoint-2" / COMPLETE).is_file(), sorted(p.name for p in out.iterdir())

    again = train(tiny_recipe, out, *overrides)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout and "checkpoint-2" in again.stdout, again.stdout[-2000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]  # the limit still holds


def test_a_save_that_does_not_fit_is_refused_with_the_path_and_the_bytes(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    p = train(tiny_recipe, out, "train.max_steps=4", "train.save_steps=2", env={FREE_BYTES: "1000"})
    assert p.returncode == DiskFullError.exit_code, p.stdout[-2000:] + p.stderr[-3000:]
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("smoldist: error:") and str(out) in line and "1,000 bytes free" in line, line
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert not (out / "checkpoint-2").exists()


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["train.max_steps=-3", "train.num_train_epochs=-1"], "train.num_train_epochs"),
        (["train.max_steps=0", "train.num_train_epochs=0"], "train.num_train_epochs"),
    ],
)
def test_a_run_that_would_train_nothing_is_refused(overrides, expected):
    from smoldist.config import load_recipe
    from smoldist.errors import RecipeError

    with pytest.raises(RecipeError, match=expected):  # was: 0 steps trained, exit 0
        load_recipe(None, overrides)


def test_seq_len_past_the_models_positions_is_refused_before_work(tiny_recipe, tmp_path):
    p = train(tiny_recipe, tmp_path / "run", "data.seq_len=1024")  # the tiny model has 512 positions
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-3000:]
    line = p.stderr.strip().splitlines()[-1]
    assert "data.seq_len" in line and "max_position_embeddings" in line and "512" in line, line
    assert not (tmp_path / "store").exists()  # refused before the store was built


def test_seq_len_past_the_positions_is_allowed_when_rope_scaling_is_configured():
    from smoldist.config import ModelConfig
    from smoldist.model.build import check_seq_len
    from tests.helpers import TINY_INIT

    init = dict(TINY_INIT, rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0})
    check_seq_len(ModelConfig(init=init), 1024)  # 512 positions stretched 4x
    check_seq_len(ModelConfig(init=dict(TINY_INIT)), 512)
