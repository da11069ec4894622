"""Stop by signal, checkpoint, resume: the resumed run matches an uninterrupted one at every step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from smoldist.distributed.checkpoints import COMPLETE, last_complete_checkpoint
from smoldist.distributed.preemption import STOPPED_EXIT_CODE
from smoldist.faults import SIGNAL_AT_EVAL_BATCH, SIGNAL_AT_STEP
from tests.helpers import REPO


def train(recipe, out, env=None) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "smoldist",
        "train",
        str(recipe),
        f"train.output_dir={out}",
        "train.max_steps=8",
        "train.save_steps=100",
        "train.per_device_train_batch_size=1",
        "train.global_batch_tokens=256",
    ]
    return subprocess.run(
        args, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, **(env or {})), timeout=300
    )


def history(out) -> list[tuple[int, float, float]]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [(h["step"], h["loss"], h["grad_norm"]) for h in state["log_history"] if "loss" in h]


def test_interrupted_and_resumed_equals_uninterrupted(tiny_recipe, tmp_path):
    full = train(tiny_recipe, tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]

    cut = tmp_path / "cut"
    first = train(tiny_recipe, cut, env={SIGNAL_AT_STEP: "3"})
    assert first.returncode == STOPPED_EXIT_CODE, first.stderr[-3000:]
    assert "stopped by signal 10 after step 3" in first.stdout
    assert (cut / "checkpoint-3" / COMPLETE).is_file() and not (cut / "model.safetensors").exists()
    (cut / "checkpoint-99").mkdir()  # an interrupted save: no marker, must not be resumed from
    (cut / "checkpoint-99" / "trainer_state.json").write_text("{")
    assert last_complete_checkpoint(str(cut)).endswith("checkpoint-3")

    second = train(tiny_recipe, cut)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout and "checkpoint-3" in second.stdout
    a, b = history(tmp_path / "full"), history(cut)
    assert [s for s, _, _ in b] == list(range(1, 9))  # no gap, no repeated step
    for (s1, l1, g1), (s2, l2, g2) in zip(a, b):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-6) and g1 == pytest.approx(g2, rel=1e-5), (s1, l1, l2)


def test_a_stop_during_evaluation_ends_it_and_saves_at_once(tiny_recipe, tmp_path):
    out = tmp_path / "cut"
    args = [
        sys.executable,
        "-m",
        "smoldist",
        "train",
        str(tiny_recipe),
        f"train.output_dir={out}",
        "train.max_steps=8",
        "train.save_steps=100",
        "train.per_device_train_batch_size=1",
        "train.global_batch_tokens=256",
        "data.packing=none",
        "data.eval_fraction=0.5",
        "train.eval_strategy=steps",
        "train.eval_steps=2",
        "train.per_device_eval_batch_size=1",
    ]  # 10 evaluation batches of one document each
    env = dict(os.environ, **{SIGNAL_AT_EVAL_BATCH: "2"})  # the signal comes at the 2nd evaluation batch
    p = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert p.returncode == STOPPED_EXIT_CODE, p.stderr[-3000:]
    assert "evaluation stopped by signal 10 after 2 batch(es)" in p.stdout, p.stdout[-3000:]
    assert "stopped by signal 10 after step 2" in p.stdout  # before: the evaluation ran to its end and step 3 trained
    assert (out / "checkpoint-2" / COMPLETE).is_file() and not (out / "checkpoint-3").exists()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert not any("eval_loss" in h for h in state["log_history"])
