"""The DPO loss on packed rows: per-document log-probs summed over each completion, then TRL's pair losses.

A padding-free micro-batch is one flat row of documents: chosen, rejected, chosen, rejected, ... (store/pair_build.py),
each attending within itself (the recipe's attention: varlen, flex, or sdpa/eager with position ids). The LM head runs
only where a completion token is predicted (`logits_to_keep`), the log-probs are summed per document, and the pair
losses are TRL 1.16 `DPOTrainer._compute_loss`'s, with `f_divergence_type="reverse_kl"` (its default):

    sigmoid        -logsigmoid(beta * (chosen_logratio - rejected_logratio))
    ipo            (chosen_logratio / chosen_tokens - rejected_logratio / rejected_tokens - 1 / (2 beta))^2
    sigmoid_norm   -logsigmoid(beta * (chosen_logratio / chosen_tokens - rejected_logratio / rejected_tokens))

TRL computes them inline in `_compute_loss`, with no function to call, so they are written out here and checked
against `DPOTrainer` on the same pairs (tests/train/test_dpo_loss.py). The metrics are TRL's: `rewards/*`, `logps/*`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = -100
ROW_COLUMNS = ("input_ids", "labels", "seq_lengths")  # a preference store's row, less its pair ids


class PairCollator:
    """Rows of whole pairs -> one padding-free micro-batch (TRL's collator), with each pair's id and, when given,
    its reference log-probs (`ref_logps`: [pairs, 2], chosen and rejected). Pair id -1 is a blank pair (an
    evaluation's top-up row): reference 0, and no loss (`real_pairs`)."""

    def __init__(self, pad_token_id: int | None, reference: np.ndarray | None = None):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.inner = DataCollatorForLanguageModeling(pad_token_id=pad_token_id or 0, padding_free=True)
        self.reference = reference

    def __call__(self, rows: list[dict]) -> dict:
        pair_ids = [p for r in rows for p in r["pair_ids"][0::2]]  # a pair's two documents carry its id
        out = self.inner([{k: r[k] for k in ROW_COLUMNS} for r in rows])
        out["pair_ids"] = torch.tensor(pair_ids, dtype=torch.long)
        if self.reference is not None:
            ids = np.asarray(pair_ids, dtype=np.int64)
            ref = np.zeros((len(ids), 2))
            ref[ids >= 0] = self.reference[ids[ids >= 0]]
            if np.isnan(ref).any():
                raise ValueError("reference log-probs missing for some pairs: the store's reference cache is stale")
            out["ref_logps"] = torch.from_numpy(ref)
        return out


@dataclass
class PairLogps:
    """Per pair of a micro-batch: the summed completion log-probs and completion token counts of each side."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor


def real_pairs(losses: torch.Tensor, metrics: dict, pair_ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The losses and metrics of the micro-batch's pairs, less the blank pairs of top-up rows (pair id -1)."""
    real = (pair_ids >= 0).to(losses.device)
    return losses[real], {k: v[real] for k, v in metrics.items()}


def document_index(cu_seq_lens: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """The document of every token of the flat row, from the collator's cu_seq_lens."""
    lengths = cu_seq_lens.diff().long()
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths, output_size=n_tokens)


def pair_logps(model, inputs: dict) -> PairLogps:
    """Summed log-probs of each document's scored tokens, the LM head run on the predicting positions only."""
    from trl.trainer.utils import selective_log_softmax

    ids, labels = inputs["input_ids"], inputs["labels"]  # [1, N]: one flat padding-free row
    n = ids.shape[-1]
    target = labels[0, 1:]
    predicts = (target != IGNORE).nonzero().flatten()  # position t predicts scored token t + 1
    model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "pair_ids", "ref_logps", "seq_lengths")}
    logits = model(**model_inputs, use_cache=False, logits_to_keep=predicts).logits[0].float()
    token_logps = selective_log_softmax(logits, target[predicts])
    docs = document_index(inputs["cu_seq_lens_q"].to(ids.device), n)[1:][predicts]
    n_docs = inputs["cu_seq_lens_q"].numel() - 1
    sums = torch.zeros(n_docs, dtype=token_logps.dtype, device=ids.device).index_add(0, docs, token_logps)
    counts = torch.zeros(n_docs, dtype=token_logps.dtype, device=ids.device).index_add(
        0, docs, torch.ones_like(token_logps)
    )
    return PairLogps(sums[0::2], sums[1::2], counts[0::2], counts[1::2])


def dpo_pair_losses(
    policy: PairLogps, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float, loss_type: str
) -> tuple[torch.Tensor, dict]:
    """(loss per pair, TRL's metrics per pair) for the policy's and the reference's log-probs."""
    chosen_logratios = policy.chosen - ref_chosen
    rejected_logratios = policy.rejected - ref_rejected
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    elif loss_type in ("ipo", "sigmoid_norm"):  # per completion token (TRL: completion_mask.sum(dim=1).clamp(min=1))
        delta = chosen_logratios / policy.chosen_tokens.clamp(
            min=1.0
        ) - rejected_logratios / policy.rejected_tokens.clamp(min=1.0)
        losses = (delta - 1 / (2 * beta)) ** 2 if loss_type == "ipo" else -F.logsigmoid(beta * delta)
    else:
        raise ValueError(f"dpo.loss_type: '{loss_type}' is not one of sigmoid, ipo, sigmoid_norm")
    chosen_rewards, rejected_rewards = beta * chosen_logratios.detach(), beta * rejected_logratios.detach()
    metrics = {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "rewards/margins": chosen_rewards - rejected_rewards,
        "logps/chosen": policy.chosen.detach(),
        "logps/rejected": policy.rejected.detach(),
    }
    return losses, metrics


class MetricSums:
    """TRL's DPO metrics summed over every pair since the last log; `means` averages them over all ranks' pairs."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.pairs = 0

    def add(self, metrics: dict) -> None:
        for name, values in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.pairs += int(next(iter(metrics.values())).numel()) if metrics else 0

    def means(self, all_reduce) -> dict:
        names = sorted(self.sums)
        if not names:
            return {}
        totals = all_reduce([*(self.sums[n] for n in names), float(self.pairs)])
        self.sums, self.pairs = {}, 0
        return {n: totals[i] / totals[-1] for i, n in enumerate(names)} if totals[-1] else {}


REFERENCE_RECORD = "dpo_reference.json"  # in a DPO run's output_dir: the store folder of its reference log-probs


def dpo_eval(run_dir: str, dpo, model, rows, batch_size: int, pad_token_id: int | None, autocast: str) -> dict:
    """A DPO run's held-out figures over the eval split's pairs: TRL's loss (mean over pairs), reward accuracy and
    margin, against the reference log-probs the run trained with (read from the store, never recomputed)."""
    import json
    from pathlib import Path

    from torch.utils.data import DataLoader

    from smoldist.errors import DataError

    record = Path(run_dir) / REFERENCE_RECORD
    reference = Path(json.loads(record.read_text())["folder"]) / "eval.npy" if record.is_file() else None
    if reference is None or not reference.is_file():
        raise DataError(f"{run_dir}: no reference log-probs for the eval split ({record}); train the run again")
    collate = PairCollator(pad_token_id, np.load(reference))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast)
    sums, loss_sum = MetricSums(), 0.0
    for batch in DataLoader(rows, batch_size=batch_size, shuffle=False, collate_fn=collate):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            policy = pair_logps(model, batch)
        ref = batch["ref_logps"].to(policy.chosen.dtype)
        losses, metrics = dpo_pair_losses(policy, ref[:, 0], ref[:, 1], dpo.beta, dpo.loss_type)
        loss_sum += float(losses.sum())
        sums.add(metrics)
    pairs = sums.pairs
    means = sums.means(lambda values: values)
    return {"eval_loss": loss_sum / pairs, "pairs": pairs, **{f"eval_{k}": v for k, v in means.items()}}
