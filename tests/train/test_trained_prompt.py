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
