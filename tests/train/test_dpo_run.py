"""DPO runs end to end through `smoldist train`: one process and DDP (2 gloo processes, checked to be one job), the
reference log-probs computed once and reused by a later run, what is not supported refused before any work."""

from __future__ import annotations

import json
import math
import random

import pytest

from smoldist.config import load_recipe
from smoldist.errors import NonFiniteError, RecipeError
from smoldist.eval.loss import eval_loss
from smoldist.faults import NAN_LOSS_AT_STEP
from smoldist.train.run import run
from tests.helpers import (
    CONFIGS,
    accelerate,
    assert_one_job,
    losses,
    ranks,
    save_tiny_base,
    write_jsonl,
    write_recipe,
)

DPO_KEYS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)


def fruit_pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    fruit = ["apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum"]
    out = []
    for _ in range(n):
        a, b, w = rng.randint(1, 20), rng.randint(1, 20), rng.choice(fruit)
        out.append(
            {
                "prompt": f"What is {a} plus {b}? Say it with a fruit.",
                "chosen": f"{a} plus {b} is {a + b}, like {w}.",
                "rejected": f"I do not know about {w}s.",
            }
        )
    return out


def dpo_recipe_file(tmp_path):
    """The tiny DPO recipe of these tests (32 fruit pairs, a quarter held out), written under tmp_path."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", fruit_pairs(32))
    raw = {
        "method": "dpo",
        "dpo": {"beta": 0.1, "loss_type": "sigmoid"},
        "model": {
            "init": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 512,
                "tie_word_embeddings": True,
            },
            "tokenizer": "pkg:demo/tokenizer",
            "dtype": "float32",
            "attn_implementation": "varlen",
        },
        "data": {
            "sources": [{"path": str(pairs), "format": "preference"}],
            "seq_len": 256,
            "overflow": "truncate",
            "store": str(tmp_path / "store"),
            "num_proc": 1,
            "eval_fraction": 0.25,
        },
        "train": {
            "output_dir": str(tmp_path / "run"),
            "max_steps": 2,
            "per_device_train_batch_size": 1,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_steps": 100,
            "activation_checkpointing": False,
            "seed": 0,
            "dataloader_num_workers": 0,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    return write_recipe(tmp_path, raw)


@pytest.fixture
def dpo_recipe(tmp_path):
    return dpo_recipe_file(tmp_path)


def log_history(run_dir) -> list[dict]:
    return [h for h in json.loads((run_dir / "trainer_state.json").read_text())["log_history"] if "loss" in h]


def test_dpo_trains_logs_trls_metrics_and_reuses_the_reference(dpo_recipe, tmp_path, capsys):
    run(load_recipe(dpo_recipe))
    first = capsys.readouterr().out
    assert "reference log-probs computed for 32 pairs" in first  # train and eval pairs
    logs = log_history(tmp_path / "run")
    assert len(logs) == 2 and all(k in logs[0] for k in DPO_KEYS)
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # step 1: the policy is the reference
    assert logs[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    (folder,) = (p for p in (tmp_path / "store").glob("*/reference/*") if p.is_dir())
    named = json.loads((folder / "reference.json").read_text())
    assert named["dtype"] == "fp32" and len(named["weights_sha256"]) == 64
    held_out = eval_loss(str(tmp_path / "run"))  # `smoldist eval RUN --loss`: against the run's reference
    assert held_out["pairs"] == 8 and 0 < held_out["eval_loss"] < 2
    assert 0 <= held_out["eval_rewards/accuracies"] <= 1 and "eval_rewards/margins" in held_out
    # a beta sweep on the same store and reference reads them
    run(load_recipe(dpo_recipe, ["dpo.beta=0.5", f"train.output_dir={tmp_path}/beta", "train.max_steps=1"]))
    second = capsys.readouterr().out
    assert f"reference log-probs reused from {folder}" in second and "computed" not in second


def test_unsupported_dpo_runs_are_refused_before_any_work(dpo_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(RecipeError, match=r"method dpo: FSDP1 is not supported .*supported: single, ddp, deepspeed"):
        run(load_recipe(dpo_recipe))
    assert not (tmp_path / "store").exists()
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    with pytest.raises(RecipeError, match=r"data.overflow: 'split' would split a pair"):
        load_recipe(dpo_recipe, ["data.overflow=split"])


def test_evaluation_during_a_dpo_run_is_the_mean_loss_over_the_eval_pairs(dpo_recipe, tmp_path):
    """eval_loss and TRL's eval_ metrics during training equal `smoldist eval RUN --loss` on the saved model."""
    run(
        load_recipe(
            dpo_recipe, ["train.eval_strategy=steps", "train.eval_steps=1", "train.per_device_eval_batch_size=3"]
        )
    )
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_loss" in h]
    assert [h["step"] for h in evals] == [1, 2]
    assert all(f"eval_{k}" in evals[-1] for k in DPO_KEYS)
    assert evals[0]["eval_loss"] != pytest.approx(math.log(2), abs=1e-4)  # after a step: not the reference's loss
    after = eval_loss(str(tmp_path / "run"))  # the saved (last) model against the same eval reference
    assert after["pairs"] == 8
    for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "eval_logps/chosen"):
        assert evals[-1][key] == pytest.approx(after[key], abs=1e-5), key


@pytest.mark.slow
def test_dpo_two_processes_are_one_job_and_match_one_process(dpo_recipe, tmp_path):
    common = ["train.global_batch_tokens=512", "train.max_steps=3"]  # 2 rows of 256: k=2 on 1 process, 1 on 2
    one = accelerate(
        ["--num_processes", "1", "-m", "smoldist.train", str(dpo_recipe), *common, f"train.output_dir={tmp_path}/one"]
    )
    assert one.returncode == 0, one.stderr[-4000:]
    cfg = str(CONFIGS / "cpu_ddp.yaml")
    two = accelerate(
        ["--config_file", cfg, "-m", "smoldist.train", str(dpo_recipe), *common, f"train.output_dir={tmp_path}/two"]
    )
    assert two.returncode == 0, two.stderr[-4000:]
    assert "grad accumulation 2" in one.stdout and "grad accumulation 1" in two.stdout
    assert "reference log-probs reused" in two.stdout  # the same store and reference: the 1-process run computed them
    assert_one_job(tmp_path / "two", 2)
    assert {r["engine"] for r in ranks(tmp_path / "two")} == {"ddp"}
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 3 and a == pytest.approx(b, rel=1e-4), (a, b)
    ra = [h["rewards/accuracies"] for h in log_history(tmp_path / "one")]
    rb = [h["rewards/accuracies"] for h in log_history(tmp_path / "two")]
    assert ra == pytest.approx(rb, abs=1e-6)


def test_a_non_finite_dpo_loss_stops_the_run_before_it_is_applied(dpo_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv(NAN_LOSS_AT_STEP, "2")
    with pytest.raises(NonFiniteError, match="step 2"):
        run(load_recipe(dpo_recipe, ["train.max_steps=3"]))
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_dpo_with_lora_starts_at_the_base_and_trains_the_adapter_only(dpo_recipe, tmp_path, capsys):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from smoldist.model.lora import frozen_checksum

    base = save_tiny_base(tmp_path / "base")
    lora = ["model.init=", f"model.name_or_path={base}", "model.lora.r=4", "model.lora.alpha=8", "model.lora.dropout=0"]
    run(load_recipe(dpo_recipe, [*lora, "train.learning_rate=1e-2"]))
    logs = log_history(tmp_path / "run")
    assert logs[0]["loss"] == pytest.approx(
        math.log(2), abs=1e-5
    )  # B starts at 0: the policy is the base, the reference
    assert logs[-1]["rewards/margins"] != 0.0
    weights = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    (report,) = ranks(tmp_path / "run")
    assert report["frozen_sha256"] == frozen_checksum(AutoModelForCausalLM.from_pretrained(base))


def test_interrupted_and_resumed_dpo_equals_uninterrupted(dpo_recipe, tmp_path):
    common = ["train.save_steps=2", "train.lr_scheduler_type=constant"]
    run(load_recipe(dpo_recipe, [*common, "train.max_steps=4", f"train.output_dir={tmp_path}/whole"]))
    run(load_recipe(dpo_recipe, [*common, "train.max_steps=2", f"train.output_dir={tmp_path}/parts"]))
    metrics = run(load_recipe(dpo_recipe, [*common, "train.max_steps=4", f"train.output_dir={tmp_path}/parts"]))
    assert metrics["resumed_from"].endswith("checkpoint-2")
    assert losses(tmp_path / "parts") == pytest.approx(losses(tmp_path / "whole"), abs=1e-6)
    assert ranks(tmp_path / "parts")[0]["param_sha256"] == ranks(tmp_path / "whole")[0]["param_sha256"]
