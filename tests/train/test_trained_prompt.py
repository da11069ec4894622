"""A run trained with one fixed system prompt saves a template that inserts it: a plain transformers user, `chat`
and `eval` ask the model as training did."""

from __future__ import annotations

import pytest

from smoldist.config import load_recipe
from smoldist.train.run import run
from tests.helpers import recipe_dict, write_jsonl, write_recipe

PROMPT = "Answer with one JSON object."
pytestmark = pytest.mark.slow  # a training run (~20 s on 2 cores): the prepare side is in tests/store


def test_the_saved_tokenizer_inserts_the_trained_system_prompt(tmp_path):
    from transformers import AutoTokenizer

    f = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": f"Give {k}", "completion": {"k": k}} for k in range(8)])
    source = {"path": str(f), "format": "prompt_completion", "system_prompt": PROMPT, "serialize": "json"}
    raw = recipe_dict(tmp_path, [source], train={"max_steps": 1, "save_steps": 10})
    run(load_recipe(write_recipe(tmp_path, raw)))
    tok = AutoTokenizer.from_pretrained(tmp_path / "run")
    text = tok.apply_chat_template([{"role": "user", "content": "Give 9"}], add_generation_prompt=True, tokenize=False)
    assert (
        text == f"<|im_start|>system\n{PROMPT}<|im_end|>\n<|im_start|>user\nGive 9<|im_end|>\n<|im_start|>assistant\n"
    )


def test_dpo_from_an_sft_output_keeps_its_system_prompt_and_one_of_its_own(tmp_path, capsys):
    """SFT on one system prompt, then DPO from its output with the same bundled template: the DPO model is saved
    asking as both trained (the SFT prompt); DPO pairs on one prompt of their own save that one instead."""
    from transformers import AutoTokenizer

    f = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": f"Give {k}", "completion": f"{k}"} for k in range(8)])
    sft = recipe_dict(tmp_path, [{"path": str(f), "format": "prompt_completion", "system_prompt": PROMPT}])
    sft["train"].update(max_steps=1, save_steps=10)
    run(load_recipe(write_recipe(tmp_path, sft)))
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": f"{k}?", "chosen": f"{k}", "rejected": "no"} for k in range(8)]
    )
    for name, source, want in [("dpo", {}, PROMPT), ("dpo-own", {"system_prompt": "Be terse."}, "Be terse.")]:
        raw = recipe_dict(tmp_path, [{"path": str(pairs), "format": "preference", **source}], data={"overflow": "drop"})
        raw["method"], raw["model"] = "dpo", {"name_or_path": str(tmp_path / "run"), "dtype": "float32"}
        raw["train"].update(max_steps=1, save_steps=10, output_dir=str(tmp_path / name), per_device_train_batch_size=1)
        capsys.readouterr()
        run(load_recipe(write_recipe(tmp_path, raw, f"{name}.yaml")))
        assert f"the start model was trained with the system prompt {PROMPT!r}" in capsys.readouterr().out
        tok = AutoTokenizer.from_pretrained(tmp_path / name)
        text = tok.apply_chat_template([{"role": "user", "content": "9?"}], add_generation_prompt=True, tokenize=False)
        assert text == f"<|im_start|>system\n{want}<|im_end|>\n<|im_start|>user\n9?<|im_end|>\n<|im_start|>assistant\n"
