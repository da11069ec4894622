"""The in-training eval_loss as `smoldist eval --loss` computes it: summed cross-entropy over every label token
of the eval split / their number, over all ranks.

transformers' eval_loss is a mean of per-batch means (a short batch's tokens weigh more), and under several
processes accelerate fills the last batches with rows from the start of the split (`even_batches`), which
padding-free batches (one flat row each) keep in the figure. Here each rank sums (loss x label tokens, label tokens)
per batch and the sums are reduced once; the split is first topped up with rows that hold no label token, so
that no real row is seen twice and every rank still runs the same number of batches (ZeRO-3 forwards are collective).
"""

from __future__ import annotations

import torch


def label_tokens(labels) -> int:
    """The tokens a causal-LM loss scores in a batch (the labels shift by one)."""
    return int((labels[..., 1:] != -100).sum())


def blank_row(pad_id: int) -> dict:
    """A row of one pad token that scores nothing."""
    return {"input_ids": [pad_id], "labels": [-100], "seq_lengths": [1]}


def top_up(dataset, multiple: int, blank: dict):
    """`dataset` with `blank` rows (no label token) appended, to a length that is a multiple of `multiple`."""
    from datasets import Dataset, concatenate_datasets

    missing = -len(dataset) % multiple
    if not missing:
        return dataset
    rows = [{k: blank[k] for k in dataset.column_names} for _ in range(missing)]
    return concatenate_datasets([dataset, Dataset.from_list(rows, features=dataset.features)])


class TokenWeightedEval:
    """Per-rank (summed loss, label tokens) of one evaluation; `mean(accelerator)` reduces over ranks."""

    def __init__(self):
        self.sums = torch.zeros(2, dtype=torch.float64)

    def add(self, batch_mean_loss, labels) -> None:
        n = label_tokens(labels)
        if n:  # a batch of top-up rows scores nothing (its mean is nan)
            self.sums += torch.tensor([float(batch_mean_loss) * n, n], dtype=torch.float64)

    def mean(self, accelerator) -> float:
        total, count = accelerator.reduce(self.sums.to(accelerator.device), reduction="sum").tolist()
        return total / count if count else float("nan")
