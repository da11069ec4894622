"""The real Gemma 3 270M (base, 262k vocabulary, real weights; tests/real_model.py): a few steps of SFT with the
family's own template (`model.chat_template: tokenizer`, masks derived) and with ChatML added to its vocabulary
(full and LoRA), and each saved model stops at its end-of-turn token under plain `generate()`, which the base does
not.

Marked `real`. Each fine-tune is 6 steps on one short conversation (~20 s on two cores): the point is the turn's
end, which the model must learn to predict and the saved config must name, not what it learns to say.
"""

from __future__ import annotations

import json

import pytest

from smoldist.config import load_recipe
from tests.helpers import real_recipe, write_jsonl

pytestmark = pytest.mark.real
QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
HELD_OUT = "What is the capital of Italy?"
MAX_NEW = 40


def finetune(tmp, model_dir, chat_template: str, lr: float = 1e-4, *overrides: str):
    from smoldist.train.run import run

    data = write_jsonl(
        tmp / "chat.jsonl",
        [{"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]}],
    )
    path = real_recipe(tmp, model_dir, max_steps=6, learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0)
    recipe = load_recipe(
        path,
        [
            f"model.chat_template={chat_template}",
            f"data.sources.0.path={data}",
            "data.sources.0.format=messages",
            *overrides,
        ],
    )
    run(recipe)
    return tmp / "run", tmp / "store"


@pytest.fixture(scope="module")
def own_template(real_gemma, tmp_path_factory):
    return finetune(tmp_path_factory.mktemp("gemma-own"), real_gemma, "tokenizer")


@pytest.fixture(scope="module")
def chatml(real_gemma, tmp_path_factory):
    return finetune(tmp_path_factory.mktemp("gemma-chatml"), real_gemma, "chatml")


@pytest.fixture(scope="module")
def chatml_lora(real_gemma, tmp_path_factory):
    return finetune(tmp_path_factory.mktemp("gemma-chatml-lora"), real_gemma, "chatml", 1e-3, "model.lora.r=8")


def reply(folder, question: str) -> tuple[list[int], object]:
    """Greedy tokens after the generation prompt, with nothing but the saved files deciding where to stop (a LoRA
    run: its base, grown to the run's vocabulary, + the adapter, as `smoldist chat` loads it)."""
    import torch
    from transformers import AutoTokenizer

    from smoldist.model.lora import load_model

    tok = AutoTokenizer.from_pretrained(folder)
    model = load_model(folder).eval()
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    assert inputs["input_ids"][0, 0] == tok.convert_tokens_to_ids("<bos>")  # Gemma reads <bos> first
    with torch.no_grad():
        gen = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)  # no eos passed
    return gen[0, inputs["input_ids"].shape[1] :].tolist(), tok


def losses(out) -> list[float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def only_row(store) -> dict:
    from smoldist.store.manifest import load_split

    [folder] = [p for p in store.iterdir() if (p / "manifest.json").is_file()]
    [row] = load_split(folder, "train")
    return row


def test_the_base_model_does_not_stop_at_a_turn_end_by_itself(real_gemma):
    new, tok = reply(real_gemma, QUESTION)
    assert len(new) == MAX_NEW and tok.convert_tokens_to_ids("<end_of_turn>") not in new, tok.decode(new)


def test_own_template_trains_the_answer_and_end_of_turn_and_the_saved_model_stops_there(own_template, real_gemma):
    from transformers import AutoTokenizer

    out, store = own_template
    row, base_tok = only_row(store), AutoTokenizer.from_pretrained(real_gemma)
    conv = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    assert row["input_ids"] == base_tok.apply_chat_template(conv, return_dict=True)["input_ids"]
    assert base_tok.decode([t for t in row["labels"] if t != -100]) == ANSWER + "<end_of_turn>"
    trained = losses(out)
    assert len(trained) == 6 and all(0 < x < 20 for x in trained) and trained[-1] < trained[0], trained

    end = base_tok.convert_tokens_to_ids("<end_of_turn>")
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"][0] == end
    for question in (QUESTION, HELD_OUT):
        new, tok = reply(out, question)
        assert new[-1] == end and len(new) < MAX_NEW, tok.decode(new)
    assert tok.decode(reply(out, QUESTION)[0]) == ANSWER + "<end_of_turn>"


def test_chatml_on_the_base_vocabulary_adds_single_tokens_and_the_saved_model_stops_on_im_end(chatml, real_gemma):
    from transformers import AutoConfig

    out, store = chatml
    row = only_row(store)
    tok_json = json.loads((out / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in tok_json["added_tokens"] if t["content"].startswith("<|im_")}
    assert added == {"<|im_start|>": 262144, "<|im_end|>": 262145}
    assert row["input_ids"][0] == 2 and row["input_ids"].count(262145) == 2  # <bos>, then one <|im_end|> a turn
    config = AutoConfig.from_pretrained(out)
    assert config.vocab_size == 262146 and config.tie_word_embeddings
    assert AutoConfig.from_pretrained(real_gemma).vocab_size == 262144
    assert losses(out)[-1] < losses(out)[0], losses(out)

    for question in (QUESTION, HELD_OUT):
        new, tok = reply(out, question)
        assert new[-1] == added["<|im_end|>"] and len(new) < MAX_NEW, tok.decode(new)


def test_chatml_lora_trains_the_added_rows_in_a_small_adapter_and_the_run_stops_on_im_end(chatml_lora):
    out, _ = chatml_lora
    adapter = (out / "adapter_model.safetensors").stat().st_size
    assert adapter < 20 << 20, adapter  # LoRA + the 2 added rows, not the 262k x 640 tables (671 MB in fp32)
    assert losses(out)[-1] < losses(out)[0], losses(out)
    for question in (QUESTION, HELD_OUT):
        new, tok = reply(out, question)
        assert new[-1] == tok.convert_tokens_to_ids("<|im_end|>") and len(new) < MAX_NEW, tok.decode(new)
