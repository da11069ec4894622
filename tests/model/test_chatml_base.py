"""ChatML on a base model whose vocabulary lacks its tokens: they are added as special tokens (one token each in the
store, which says so), the embeddings grow and stay tied, and the trained model stops on <|im_end|> under plain
generate(). `<|im_end|>` starts as the base model's end-of-text row, so it can be predicted from the first steps (a
mean row scores about 1/V); `<|im_start|>` at the mean of the rows."""

from __future__ import annotations

import json

import pytest

from smoldist.config import ModelConfig, load_recipe
from smoldist.data.converters import Document
from smoldist.data.encode import Encoder
from smoldist.data.templates import load_template
from smoldist.data.tokenizer import load_prep_tokenizer
from smoldist.model.build import build_model, load_tokenizer
from smoldist.store.plan import plan_store
from smoldist.train.run import run
from tests.helpers import chatml_base_recipe, recipe_dict, save_base_without_chatml, write_jsonl, write_recipe


@pytest.fixture
def base(tmp_path):
    return save_base_without_chatml(tmp_path / "base")


def test_chatml_tokens_are_added_once_and_are_single_tokens_in_the_store(base, tmp_path):
    cfg = ModelConfig(name_or_path=str(base), chat_template="chatml", dtype="float32")
    tok = load_prep_tokenizer(cfg)
    size = tok.backend.get_vocab_size()
    assert tok.added == {"<|im_start|>": size - 2, "<|im_end|>": size - 1}
    msgs = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Snow is white."}]
    batch = Encoder.for_template(tok, load_template("chatml"), "assistant").encode([Document(messages=msgs)])
    assert batch.ids.tolist().count(size - 1) == 2 and batch.ids.tolist().count(size - 2) == 2
    trained = [t for t, lab in zip(batch.ids.tolist(), batch.labels.tolist()) if lab != -100]
    assert tok.decode(trained) == "Snow is white.<|im_end|>"
    # training's tokenizer gives the same ids; the store key and manifest say tokens were added
    assert load_tokenizer(cfg).smoldist_added == tok.added
    raw = recipe_dict(tmp_path, [{"path": str(write_jsonl(tmp_path / "c.jsonl", [{"messages": msgs}]))}])
    raw["model"] = {"name_or_path": str(base), "chat_template": "chatml"}
    recipe = load_recipe(write_recipe(tmp_path, raw))
    assert plan_store(recipe.model, recipe.data).inputs["added_tokens"] == tok.added
    raw["model"]["chat_template"] = "smollm2"  # its <|im_end|> is not one token here: refused before any work
    with pytest.raises(Exception, match="not a single token"):
        plan_store(load_recipe(write_recipe(tmp_path, raw)).model, recipe.data)


def test_embeddings_grow_im_end_from_the_end_of_text_row_im_start_from_the_mean_and_stay_tied(base):
    import torch
    from transformers import AutoModelForCausalLM

    cfg = ModelConfig(name_or_path=str(base), chat_template="chatml", dtype="float32")
    old = AutoModelForCausalLM.from_pretrained(base).get_input_embeddings().weight.detach().clone()
    tok = load_tokenizer(cfg)
    model = build_model(cfg, tok)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok) == old.shape[0] + 2 and model.config.vocab_size == len(tok)
    assert torch.equal(emb[:-2], old)
    assert torch.allclose(emb[-2], old.mean(dim=0))  # <|im_start|>: where the average token is
    assert torch.equal(emb[-1], old[tok.eos_token_id])  # <|im_end|>: where the base model already ends a text
    assert model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()  # the tied head is the same tensor


def test_trained_base_model_stops_on_im_end_under_plain_generate(base, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run(load_recipe(chatml_base_recipe(tmp_path, base)))
    out = tmp_path / "run"
    assert json.loads((out / "tokenizer_config.json").read_text())["eos_token"] == "<|im_end|>"
    tok, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert len(tok.tokenize("<|im_end|>")) == 1 and model.config.vocab_size == len(tok)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Hello 3!"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out_ids = model.generate(**prompt, max_new_tokens=20, do_sample=False)[0, prompt["input_ids"].shape[1] :]
    assert out_ids.tolist()[-1] == im_end and len(out_ids) < 20  # stopped by itself, at the end of its turn
    assert tok.decode(out_ids) == "ok<|im_end|>"
