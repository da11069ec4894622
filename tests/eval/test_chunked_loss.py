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
