"""The DPO trainer: SmoldistTrainer (throughput, non-finite stop, checkpoints) with the pair loss of train/dpo_loss.py.

Rows come from a preference store (store/pair_build.py): whole pairs, so a micro-batch never splits one. The loss is
the mean over the pairs of the whole global batch: each micro-batch adds its pairs' summed loss scaled by
world size / pairs in the optimiser step over all ranks (counted when the step's micro-batches are fetched), so DDP's
gradient average and any accumulation give that mean, the same for 1 process and 2. The reference log-probs are
read from arrays (train/dpo_reference.py), looked up by each row's `pair_ids`: no reference model in memory.
"""

from __future__ import annotations

from smoldist.distributed.state import sum_over_ranks
from smoldist.eval.dpo_loss import ROW_COLUMNS, MetricSums, PairCollator, dpo_pair_losses, pair_logps
from smoldist.model.attention import warn_dense_packed
from smoldist.train.trainer import SmoldistTrainer


class DpoTrainer(SmoldistTrainer):
    def __init__(self, *args, beta: float, loss_type: str, data_collator: PairCollator, **kwargs):
        super().__init__(*args, **kwargs)  # SFTTrainer refuses a custom collator with padding-free rows: set after
        self.data_collator = data_collator
        self.beta, self.loss_type = beta, loss_type
        self.loss_is_scaled_for_ga = True  # compute_loss divides by the global batch's pairs itself
        self.dpo_sums = {"train": MetricSums(), "eval": MetricSums()}
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
        self.dpo_sums["train" if model.training else "eval"].add(metrics)
        if model.training:  # summed here, averaged by DDP over ranks: the mean over the step's pairs
            loss = losses.sum() * (self.args.world_size / max(self.step_pairs or 1.0, 1.0))
        else:
            loss = losses.mean()
        if self.guard is not None and model.training and self.guard.poisoned(self.state.global_step + 1):
            loss = loss * float("nan")
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: every rank is here, so the all-reduce meets
            logs.update(self.dpo_sums["train"].means(sum_over_ranks))
        super().log(logs, start_time)
