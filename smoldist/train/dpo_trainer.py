"""The DPO trainer: SmoldistTrainer (throughput, non-finite stop, checkpoints) with the pair loss of eval/dpo_loss.py.

Rows come from a preference store (store/pair_build.py): whole pairs, so a micro-batch never splits one. The loss is
the mean over the pairs of the whole global batch: each micro-batch adds its pairs' summed loss scaled by
world size / pairs in the optimiser step over all ranks (counted when the step's micro-batches are fetched). Every
engine averages gradients over the ranks (DDP, DeepSpeed ZeRO-2/3, FSDP2) and none divides by the accumulation here
(`loss_is_scaled_for_ga`; transformers tells DeepSpeed not to), so any world size and accumulation give that mean.
The reference log-probs are read from arrays (train/dpo_reference.py), looked up by each row's `pair_ids`.

Evaluation (`train.eval_strategy`): `eval_loss` is the mean DPO loss over the eval split's pairs (all ranks), beside
TRL's metrics with the `eval_` prefix, against the eval split's cached reference log-probs.
"""

from __future__ import annotations

import torch

from smoldist.distributed.state import sum_over_ranks
from smoldist.eval.dpo_loss import ROW_COLUMNS, MetricSums, PairCollator, dpo_pair_losses, pair_logps, real_pairs
from smoldist.model.attention import warn_dense_packed
from smoldist.train.trainer import SmoldistTrainer


def global_batch_share(losses: torch.Tensor, world_size: int, step_pairs: float) -> torch.Tensor:
    """A micro-batch's part of the mean over the step's pairs, once the engine averages the gradients over ranks."""
    return losses.sum() * (world_size / max(step_pairs, 1.0))


class DpoTrainer(SmoldistTrainer):
    def __init__(self, *args, beta: float, loss_type: str, data_collator: PairCollator, **kwargs):
        super().__init__(*args, **kwargs)  # SFTTrainer refuses a custom collator with padding-free rows: set after
        self.data_collator = data_collator
        self.beta, self.loss_type = beta, loss_type
        self.loss_is_scaled_for_ga = True  # compute_loss divides by the global batch's pairs itself
        self.dpo_sums = {"train": MetricSums(), "eval": MetricSums()}
        self.eval_loss_sums = [0.0, 0.0]  # (summed loss, pairs) of the running evaluation, this rank
        self.step_pairs: float | None = None  # pairs of the current optimiser step, over all ranks

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [*ROW_COLUMNS, "pair_ids"]

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        local = sum(int(b["pair_ids"].numel()) for b in batches)
        self.step_pairs = sum_over_ranks([float(local)])[0]  # every rank fetches its step's batches here
        return batches, num_items

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.is_world_process_zero():
            warn_dense_packed(self.model.config._attn_implementation, inputs)
        policy = pair_logps(model, inputs)
        ref = inputs["ref_logps"].to(policy.chosen.dtype)
        losses, metrics = dpo_pair_losses(policy, ref[:, 0], ref[:, 1], self.beta, self.loss_type)
        losses, metrics = real_pairs(losses, metrics, inputs["pair_ids"])
        self.dpo_sums["train" if model.training else "eval"].add(metrics)
        if model.training:
            loss = global_batch_share(losses, self.args.world_size, self.step_pairs or 1.0)
        else:
            self.eval_loss_sums[0] += float(losses.detach().sum())
            self.eval_loss_sums[1] += losses.numel()
            loss = losses.sum() / max(losses.numel(), 1)
        if self.guard is not None and model.training and self.guard.poisoned(self.state.global_step + 1):
            loss = loss * float("nan")
        return (loss, None) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None  # the pair loss has no logits to return

    def blank_row(self, pad_id: int) -> dict:
        return {"input_ids": [pad_id] * 2, "labels": [-100] * 2, "seq_lengths": [1, 1], "pair_ids": [-1, -1]}

    def evaluation_loop(self, *args, **kwargs):
        self.eval_loss_sums, self.dpo_sums["eval"] = [0.0, 0.0], MetricSums()
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        total, pairs = sum_over_ranks(self.eval_loss_sums)
        output.metrics[f"{prefix}_loss"] = total / pairs if pairs else float("nan")  # mean over the eval pairs
        output.metrics.update({f"{prefix}_{k}": v for k, v in self.dpo_sums["eval"].means(sum_over_ranks).items()})
        return output

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: every rank is here, so the all-reduce meets
            logs.update(self.dpo_sums["train"].means(sum_over_ranks))
        super().log(logs, start_time)
