"""`smoldist eval --loss` never builds the full-vocabulary logits: the head and cross-entropy run over chunks of
label tokens, and the sum equals the model's own loss; the model runs with the recipe's attention."""

from __future__ import annotations

import pytest
import torch

from smoldist.eval.loss import chunked_loss_sum
from tests.helpers import as_row, collate, documents, tiny_model


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_chunked_loss_equals_the_models_full_loss(chunk):
    model = tiny_model("sdpa")
    batch = collate([as_row(documents(seed=1, n=3)), as_row(documents(seed=2, n=2))])
    n = int((batch["labels"][..., 1:] != -100).sum())
    with torch.no_grad():
        full = model(**batch, use_cache=False, num_items_in_batch=n).loss.item() * n
        total, count = chunked_loss_sum(model, batch, chunk_tokens=chunk)
    assert count == n
    assert total == pytest.approx(full, rel=1e-5)


def transformed_head_model(family: str):
    """A tiny model of a family whose forward transforms the head's logits, set so that it matters here."""
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
    )
    extra = {
        "gemma2": {"final_logit_softcapping": 0.05},
        "cohere": {"logit_scale": 4.0},
        "granite": {"logits_scaling": 0.25},
    }[family]
    torch.manual_seed(0)
    attn = "eager" if family == "gemma2" else "sdpa"  # transformers refuses sdpa for Gemma 2
    return AutoModelForCausalLM.from_config(
        AutoConfig.for_model(family, **shape, **extra), attn_implementation=attn
    ).eval()


@pytest.mark.parametrize("family", ["gemma2", "cohere", "granite"])
def test_chunked_loss_applies_the_heads_own_transform(family):
    """Gemma 2 soft-caps its logits, Cohere scales them, Granite divides them: the loss is the model's own."""
    model = transformed_head_model(family)
    batch = collate([as_row(documents(seed=1, n=3)), as_row(documents(seed=2, n=2))])
    n = int((batch["labels"][..., 1:] != -100).sum())
    with torch.no_grad():
        full = model(**batch, use_cache=False, num_items_in_batch=n).loss.item() * n
        total, _ = chunked_loss_sum(model, batch, chunk_tokens=7)
    assert total == pytest.approx(full, rel=1e-5)


def test_a_head_whose_logits_cannot_be_reproduced_is_refused_not_scored():
    """A forward that does to the logits what smoldist does not know: one clear line, never a wrong figure."""
    from smoldist.errors import RecipeError
    from smoldist.eval.loss import token_mean_loss

    model = tiny_model("sdpa")
    forward = model.forward

    def doubled(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits * 2
        return out

    model.forward = doubled
    rows = [as_row(documents(seed=1, n=3))]
    with pytest.raises(RecipeError, match="LlamaForCausalLM"):
        token_mean_loss(model, rows, batch_size=1)
