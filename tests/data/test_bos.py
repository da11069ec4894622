"""A tokenizer that starts every text with BOS (Gemma's, Llama 2's): the bundled templates and plain-text documents
start with it too, once, as the model saw every text in pretraining (Gemma without its BOS is badly off). A tokenizer
that does not (SmolLM2's) gets the bundled templates unchanged."""

from __future__ import annotations

import json

import pytest

from smoldist.config import load_recipe
from smoldist.data.templates import load_template
from smoldist.store.build import prepare
from smoldist.store.manifest import load_split
from tests.helpers import CONVERSATIONS, family_tokenizer, recipe_dict, write_jsonl, write_recipe


def bos_tokenizer(folder):
    """The demo tokenizer with a `<bos>` its post-processor puts before every text, as Gemma's tokenizer.json does."""
    from tokenizers import Tokenizer, processors

    family_tokenizer(folder, None, ["<bos>"], bos="<bos>", eos="<|endoftext|>")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    tok.save(str(folder / "tokenizer.json"))
    return folder, bos


def prepared(tmp_path, tokenizer, template: str, sources: list[dict]):
    raw = recipe_dict(tmp_path, sources)
    raw["model"].update(tokenizer=str(tokenizer), chat_template=template)
    raw["data"]["packing"] = "none"  # a row per document
    recipe = load_recipe(write_recipe(tmp_path, raw))
    store = prepare(recipe.model, recipe.data, verbose=False)
    return store, load_split(store.path, "train")


@pytest.mark.parametrize("template", ["chatml", "smollm2"])
def test_bundled_templates_start_with_bos_where_the_tokenizer_puts_one_before_every_text(tmp_path, template):
    from transformers import AutoTokenizer

    folder, bos = bos_tokenizer(tmp_path / "tok")
    chats = write_jsonl(tmp_path / "chats.jsonl", CONVERSATIONS)
    store, rows = prepared(tmp_path, folder, template, [{"path": str(chats), "format": "messages"}])
    assert store.template == "{{ bos_token }}" + load_template(template)
    hf = AutoTokenizer.from_pretrained(folder)
    for row, conv in zip(rows, CONVERSATIONS):
        assert row["input_ids"][0] == bos and row["input_ids"].count(bos) == 1 and row["labels"][0] == -100
        # the saved model's tokenizer carries this template: inference renders the same tokens, BOS once
        rendered = hf.apply_chat_template(conv["messages"], chat_template=store.template, return_dict=True)
        assert row["input_ids"] == rendered["input_ids"]


def test_plain_text_starts_with_bos_where_the_tokenizer_puts_one_before_every_text(tmp_path):
    folder, bos = bos_tokenizer(tmp_path / "tok")
    texts = write_jsonl(tmp_path / "code.jsonl", [{"text": "def f(x):\n    return x\n"}])
    store, rows = prepared(tmp_path, folder, "chatml", [{"path": str(texts), "format": "text"}])
    eos = json.loads((folder / "tokenizer_config.json").read_text())["eos_token"]
    from tokenizers import Tokenizer

    ids = rows[0]["input_ids"]
    assert ids[0] == bos and ids[-1] == Tokenizer.from_file(str(folder / "tokenizer.json")).token_to_id(eos)
    assert ids.count(bos) == 1
    assert json.loads((store.path / "manifest.json").read_text())["inputs"]["bos_prefix"] == bos  # a key of its own


def test_a_tokenizer_without_bos_gets_the_bundled_template_as_written(tmp_path):
    chats = write_jsonl(tmp_path / "chats.jsonl", CONVERSATIONS)
    raw = recipe_dict(tmp_path, [{"path": str(chats), "format": "messages"}])
    recipe = load_recipe(write_recipe(tmp_path, raw))
    store = prepare(recipe.model, recipe.data, verbose=False)
    assert store.template == load_template("smollm2")  # SmolLM2's tokenizer (the demo's) adds nothing before text
    assert "bos_prefix" not in json.loads((store.path / "manifest.json").read_text())["inputs"]  # its key unchanged
