"""The real SmolLM2-135M-Instruct learns a preference: a few dozen packed DPO steps on pairs this test makes, and the
implicit reward accuracy on held-out pairs (scored as `smoldist eval RUN --loss` scores them) rises well above
chance (at step 0 every reward is 0: accuracy 0, loss log 2)."""

from __future__ import annotations

import json
import math
import random

import pytest

from smoldist.config import load_recipe
from smoldist.eval.loss import eval_loss
from smoldist.train.run import run
from tests.helpers import write_jsonl, write_recipe

pytestmark = pytest.mark.real


def arithmetic_pairs(n: int, seed: int = 0) -> list[dict]:
    """Chosen: the sum, said plainly; rejected: a refusal. A preference one short run can learn."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        out.append(
            {
                "prompt": f"What is {a} + {b}?",
                "chosen": f"{a} + {b} = {a + b}.",
                "rejected": rng.choice(["I cannot help with that.", "No.", "Ask someone else."]),
            }
        )
    return out


def test_real_model_reward_accuracy_rises_on_held_out_pairs(real_instruct, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", arithmetic_pairs(64))
    raw = {
        "method": "dpo",
        "dpo": {"beta": 0.1, "loss_type": "sigmoid"},
        "model": {"name_or_path": str(real_instruct), "dtype": "float32", "attn_implementation": "varlen"},
        "data": {
            "sources": [{"path": str(pairs), "format": "preference"}],
            "seq_len": 512,
            "overflow": "truncate",
            "eval_fraction": 0.25,
            "store": str(tmp_path / "store"),
            "num_proc": 1,
        },
        "train": {
            "output_dir": str(tmp_path / "run"),
            "max_steps": 12,
            "per_device_train_batch_size": 1,
            "learning_rate": 1e-5,
            "lr_scheduler_type": "constant",
            "logging_steps": 3,
            "save_strategy": "no",
            "activation_checkpointing": False,
            "dataloader_num_workers": 0,
            "seed": 0,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    run(load_recipe(write_recipe(tmp_path, raw)))
    logs = [h for h in json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert logs[0]["loss"] < math.log(2) + 0.05 and logs[-1]["loss"] < logs[0]["loss"]
    held_out = eval_loss(str(tmp_path / "run"))
    print(f"held-out: {held_out}")
    assert held_out["pairs"] == 16
    assert held_out["eval_rewards/accuracies"] >= 0.8  # chance is 0.5; at step 0 it is 0 (all rewards equal)
    assert held_out["eval_loss"] < math.log(2) and held_out["eval_rewards/margins"] > 0
