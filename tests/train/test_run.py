"""Training on the store: a few steps, the saved model reloads and generates, a second run resumes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from smoldist.config import load_recipe
from smoldist.errors import RecipeError
from smoldist.train.arguments import gradient_accumulation
from smoldist.train.run import run


def test_train_saves_a_model_that_reloads_and_generates(tiny_recipe, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from smoldist.eval.generate import chat

    metrics = run(load_recipe(tiny_recipe))
    out = tmp_path / "run"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and metrics["resumed_from"] is None
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 3 and all(loss == loss and loss > 0 for loss in losses)  # finite, real
    assert (out / "recipe.yaml").is_file()
    rank = json.loads((out / "ranks" / "rank-0.json").read_text())  # auto, resolved, and why: in the rank report
    assert rank["attention"]["asked"] == "auto" and rank["attention"]["chosen"] == "varlen"
    assert "per-document SDPA" in rank["attention"]["reason"] and rank["activation_checkpointing"] is False
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert "{% generation %}" in tok.chat_template  # the template the store was built with
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    gen = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(chat(str(out), "Hi", max_new_tokens=4), str)


def test_second_train_resumes_from_checkpoint(tiny_recipe, tmp_path, caplog):
    import logging

    run(load_recipe(tiny_recipe))  # 3 steps; checkpoints at 2 and 3
    with caplog.at_level(logging.WARNING):
        metrics = run(load_recipe(tiny_recipe, ["train.max_steps=5"]))
    assert metrics["resumed_from"].endswith("checkpoint-3")
    # the tiny model ties lm_head to the embeddings: a checkpoint holds the tensor once, so nothing is missing
    assert "missing keys" not in caplog.text  # before: "missing keys ... ['lm_head.weight']" on every resume
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == [1, 2, 3, 4, 5]  # resumed at 4, not started over


def test_loss_falls_on_the_demo_data(tmp_path):
    r = load_recipe(
        None,
        [
            f"data.store={tmp_path}/store",
            f"train.output_dir={tmp_path}/run",
            "train.max_steps=30",
            "train.num_train_epochs=1",
            "train.eval_strategy=no",
            "train.save_strategy=no",
            "train.logging_steps=5",
        ],
    )
    run(r)
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize(
    "gbt, rows, seq, world, want", [(None, 8, 2048, 4, 1), (65536, 4, 2048, 2, 4), (16384, 8, 2048, 1, 1)]
)
def test_gradient_accumulation_from_global_batch_tokens(gbt, rows, seq, world, want):
    assert gradient_accumulation(gbt, rows, seq, world) == want


def test_global_batch_that_does_not_divide_is_refused():
    with pytest.raises(RecipeError, match=r"not a multiple of .* = 2 x 2048 x 3 = 12288"):
        gradient_accumulation(65536, 2, 2048, 3)


def test_cli_bad_input_prints_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model: {init: {hidden_size: 8}, tokenizer: pkg:demo/tokenizer}\n"
        "data: {sources: [{path: missing.jsonl}], seq_len: oops}\n"
    )
    p = subprocess.run(
        [sys.executable, "-m", "smoldist", "prepare", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 2
    assert p.stderr.strip() == "smoldist: error: data.seq_len: expected an integer, got 'oops'"
    bad.write_text(
        "model: {init: {hidden_size: 8}, tokenizer: pkg:demo/tokenizer}\ndata: {sources: [{path: missing.jsonl}]}\n"
    )
    p = subprocess.run([sys.executable, "-m", "smoldist.train", str(bad)], capture_output=True, text=True, timeout=120)
    # a relative path in a recipe is read from the recipe's folder, and the error names where it looked
    want = f"data.sources.0.path: no file matches '{bad.parent / 'missing.jsonl'}'"
    assert p.returncode == 2 and p.stderr.strip().endswith(want), p.stderr


def test_train_defaults_have_one_source_and_hub_keys_pass_through(tiny_recipe):
    from smoldist.train.arguments import sft_config, train_defaults

    r = load_recipe(
        tiny_recipe, ["train.push_to_hub=true", "train.hub_model_id=me/smol-lora", "train.hub_private_repo=true"]
    )
    r.train.pop("output_dir")  # as if the recipe had none
    args = sft_config(r, 1, [])
    assert args.output_dir == train_defaults(r)["output_dir"] == f"runs/{r.name}"
    assert args.use_cpu == train_defaults(r)["use_cpu"]
    assert args.push_to_hub and args.hub_model_id == "me/smol-lora" and args.hub_private_repo


def test_activation_checkpointing_is_off_unless_the_recipe_asks(tiny_recipe):
    """TRL's default is on (about half the step time of a small model); smoldist's is off, and the run says which."""
    from smoldist.train.arguments import sft_config

    def checkpointing(asked: dict):
        r = load_recipe(tiny_recipe)
        r.train.pop("gradient_checkpointing", None)  # the test recipe sets it: as if it had not
        r.train.update(asked)
        args = sft_config(r, 1, [])
        return getattr(args, "activation_checkpointing", getattr(args, "gradient_checkpointing", None))

    assert checkpointing({}) is False
    assert checkpointing({"activation_checkpointing": True}) is True
    assert checkpointing({"gradient_checkpointing": True}) is True
