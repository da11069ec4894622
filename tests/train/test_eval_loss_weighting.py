"""The trainer's eval_loss is the loss per label token (summed cross-entropy / label tokens), the figure
`smoldist eval --loss` prints, not a mean of batch means that weighs a short batch's tokens more."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from smoldist.config import load_recipe
from smoldist.store.manifest import load_split
from smoldist.train.run import run
from tests.helpers import REPO, assert_one_job, free_port, own_eval_loss, recipe_dict, write_recipe


def test_in_training_eval_loss_is_token_weighted_over_rows_of_different_lengths(tmp_path, conversations_file):
    from transformers import AutoModelForCausalLM

    train = {"max_steps": 2, "eval_strategy": "steps", "eval_steps": 2, "per_device_eval_batch_size": 3}
    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}], train=train)
    raw["data"].update(eval_fraction=0.5, packing="none")
    run(load_recipe(write_recipe(tmp_path, raw)))
    out = tmp_path / "run"
    (logged,) = [
        h["eval_loss"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "eval_loss" in h
    ]
    rows = load_split(next(p for p in (tmp_path / "store").iterdir() if not p.name.startswith(".")), "eval")
    assert len(rows) % 3 and len({len(r["input_ids"]) for r in rows}) > 1  # a short last batch, mixed lengths
    want, _ = own_eval_loss(AutoModelForCausalLM.from_pretrained(out).eval(), rows)
    assert logged == pytest.approx(want, abs=1e-5)


@pytest.mark.slow
def test_two_process_eval_loss_counts_every_row_once(tmp_path, conversations_file):
    from transformers import AutoModelForCausalLM

    train = {
        "max_steps": 2,
        "eval_strategy": "steps",
        "eval_steps": 2,
        "per_device_eval_batch_size": 3,
        "per_device_train_batch_size": 1,
    }
    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}], train=train)
    raw["data"].update(eval_fraction=0.5, packing="none")
    recipe = write_recipe(tmp_path, raw)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "smoldist",
            "train",
            str(recipe),
            "--accelerate-config",
            "cpu_ddp",
            "--num-processes",
            "2",
            "--main-process-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env=dict(os.environ, TOKENIZERS_PARALLELISM="false"),
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = tmp_path / "run"
    assert_one_job(out, 2)
    (logged,) = [
        h["eval_loss"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "eval_loss" in h
    ]
    rows = load_split(next(p for p in (tmp_path / "store").iterdir() if not p.name.startswith(".")), "eval")
    assert len(rows) % 6  # 2 ranks x 3 rows: accelerate would repeat rows from the start to fill the last batches
    want, _ = own_eval_loss(AutoModelForCausalLM.from_pretrained(out).eval(), rows)
    assert logged == pytest.approx(want, abs=1e-5)
