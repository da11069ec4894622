"""Real tokenizers of Llama 3, Gemma 3 and SmolLM2 (tests/real_tokenizers.py, tests/real_model.py): every document
token-identical to `apply_chat_template`, the trained tokens exactly the assistant turns + end-of-turn token; ChatML
on Gemma's base vocabulary adds its two tokens, each one token in the store."""

from __future__ import annotations

import json
import random

import pytest

from smoldist.config import DataConfig, ModelConfig
from smoldist.data.converters import Document
from smoldist.data.encode import Encoder
from smoldist.data.templates import has_generation_markers, load_template, recipe_template
from smoldist.data.tokenizer import load_prep_tokenizer
from tests.helpers import FIXTURES, GEMMA, LLAMA3, assert_exact

pytestmark = pytest.mark.real
ALPHABET = "abc XYZ 123 ,.!?\n\t éü中文🚀<>#$=*"


def gsm8k_conversations(seed: int, n: int) -> list[list[dict]]:
    """Multi-turn conversations of real gsm8k questions and answers, some with a system prompt."""
    rows = [json.loads(line) for line in (FIXTURES / "gsm8k_train_sample.jsonl").read_text().splitlines()]
    rng, out = random.Random(seed), []
    for _ in range(n):
        msgs = [{"role": "system", "content": "Solve step by step."}] if rng.random() < 0.3 else []
        for row in rng.sample(rows, rng.randint(1, 3)):
            noise = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 8)))
            msgs.append({"role": "user", "content": row["question"] + noise})
            msgs.append({"role": "assistant", "content": row["answer"]})
        out.append(msgs)
    return out


@pytest.fixture(scope="module")
def llama3():
    from tests.real_tokenizers import llama3_tokenizer

    return llama3_tokenizer()


@pytest.fixture(scope="module")
def gemma3():
    from tests.real_tokenizers import gemma3_tokenizer

    return gemma3_tokenizer()


def own(folder) -> ModelConfig:
    return ModelConfig(tokenizer=str(folder), init={"hidden_size": 8}, chat_template="tokenizer")


def test_llama3_own_template_masks_are_exact(llama3):
    assert recipe_template(own(llama3), DataConfig()) == LLAMA3
    assert_exact(llama3, LLAMA3, "<|eot_id|>", gsm8k_conversations(0, 120))


def test_gemma3_own_template_masks_are_exact(gemma3):
    assert recipe_template(own(gemma3), DataConfig()) == GEMMA  # read from its chat_template.jinja
    assert_exact(gemma3, GEMMA, "<end_of_turn>", gsm8k_conversations(1, 120))


def test_smollm2_own_template_derives_the_bundled_templates_masks(real_instruct):
    template = recipe_template(own(real_instruct), DataConfig())
    assert not has_generation_markers(template)  # the stock SmolLM2-Instruct template, as its GGUF ships it
    tok = load_prep_tokenizer(own(real_instruct))
    docs = [Document(messages=m) for m in gsm8k_conversations(2, 60)]
    derived = Encoder.for_template(tok, template, "assistant").encode(docs)
    marked = Encoder.for_template(tok, load_template("smollm2"), "assistant").encode(docs)
    assert derived.ids.tolist() == marked.ids.tolist() and derived.labels.tolist() == marked.labels.tolist()
    assert_exact(real_instruct, template, "<|im_end|>", gsm8k_conversations(3, 40))


def test_chatml_on_gemma_base_vocabulary_adds_single_tokens(gemma3):
    cfg = ModelConfig(tokenizer=str(gemma3), init={"hidden_size": 8}, chat_template="chatml")
    tok = load_prep_tokenizer(cfg)
    assert tok.added == {"<|im_start|>": 262144, "<|im_end|>": 262145}
    docs = [Document(messages=m) for m in gsm8k_conversations(4, 20)]
    batch = Encoder.for_template(tok, load_template("chatml"), "assistant").encode(docs)
    ids, labels = batch.ids.tolist(), batch.labels.tolist()
    turns = sum(len(d.messages) for d in docs)
    assert ids.count(262144) == turns and ids.count(262145) == turns  # one token each, per message
    assert sum(1 for t, lab in zip(ids, labels) if lab == 262145) == sum(
        1 for d in docs for m in d.messages if m["role"] == "assistant"
    )
