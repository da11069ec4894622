"""A non-finite loss or gradient norm stops the run at its optimiser step, on every rank, before the step is applied.

Each micro-batch's loss is folded into one on-device flag (no host sync); once per optimiser step, after the
gradient norm is known and before the optimiser steps, the ranks agree in one all-reduce. When any rank saw a
non-finite value, every rank raises NonFiniteError there: nothing of that step is applied, no checkpoint or final
model is written, and the last complete checkpoint stays the resume point. The step's rows are saved beside the
checkpoints to look at.

DeepSpeed steps inside backward, before this check. Its bf16 and fp16 engines check the gradients first
(`check_grad_overflow`) and skip a non-finite step (the norm then reads inf): the engine's `was_step_applied()` says
which happened, and the message says that. Under ZeRO-3 the module's parameters are empty partitions, so the weights
are read through DeepSpeed's own full fp32 parameter access (`safe_get_full_fp32_param`, a collective every rank
makes in the same order).
"""

from __future__ import annotations

from pathlib import Path

from smoldist import faults
from smoldist.distributed.checkpoints import checkpoint_step, last_complete_checkpoint
from smoldist.distributed.state import max_over_ranks
from smoldist.errors import NonFiniteError

ROWS_DIR = "nonfinite-step-{step}"  # in output_dir: each rank's micro-batches of the step that failed


class NonFiniteGuard:
    def __init__(
        self, rank: int, world_size: int, output_dir: str, resumed_from: str | None, steps_in_backward: bool = False
    ):
        self.rank, self.world_size, self.output_dir, self.resumed_from = rank, world_size, output_dir, resumed_from
        self.steps_in_backward = steps_in_backward  # DeepSpeed: the update is in the weights before the check
        self.loss_bad = None  # bool tensor: a micro-batch of this step had a non-finite loss
        self.batches: list[dict] = []  # this step's micro-batches (in memory anyway): saved only when it fails
        self.fault_step = faults.count(faults.NAN_LOSS_AT_STEP) if rank == world_size - 1 else None

    def poisoned(self, next_step: int) -> bool:
        """The fault switch: this rank's loss of optimiser step `next_step` becomes NaN (tests only)."""
        return self.fault_step is not None and next_step == self.fault_step

    def saw(self, loss, inputs: dict) -> None:
        import torch

        bad = ~torch.isfinite(loss.detach())
        self.loss_bad = bad if self.loss_bad is None else self.loss_bad | bad
        self.batches.append(inputs)

    def check(self, step: int, grad_norm, model) -> None:
        """Called on every rank once per optimiser step `step`, before the optimiser steps; raises on every rank."""
        import torch

        loss_bad = self.loss_bad if self.loss_bad is not None else torch.tensor(False)
        norm = torch.as_tensor(float("nan") if grad_norm is None else grad_norm, dtype=torch.float32)
        norm_bad = grad_norm is not None and not bool(torch.isfinite(norm))
        # rank + 1 where bad, 0 where fine: the maximum names the highest rank that saw it
        loss_rank, norm_rank = max_over_ranks([(self.rank + 1) * float(loss_bad), (self.rank + 1) * float(norm_bad)])
        batches, self.batches, self.loss_bad = self.batches, [], None
        if not (loss_rank or norm_rank):
            return
        weights_bad = max_over_ranks([float(weights_nonfinite(model))])[0]
        rows = self.save_rows(step, batches)
        applied = deepspeed_step_applied(model)
        raise NonFiniteError(self.describe(step, int(loss_rank) - 1, norm, bool(weights_bad), rows, applied))

    def save_rows(self, step: int, batches: list[dict]) -> Path:
        import torch

        folder = Path(self.output_dir) / ROWS_DIR.format(step=step)
        folder.mkdir(parents=True, exist_ok=True)
        cpu = [{k: v.detach().cpu() for k, v in b.items() if isinstance(v, torch.Tensor)} for b in batches]
        torch.save(cpu, folder / f"rank-{self.rank}.pt")
        return folder

    def describe(
        self, step: int, loss_rank: int, norm, weights_bad: bool, rows: Path, applied: bool | None = None
    ) -> str:
        resume = last_complete_checkpoint(self.output_dir)
        if weights_bad:  # the root: a step on non-finite weights can only give non-finite numbers
            poisoned = self.resumed_from if self.resumed_from and resume == self.resumed_from else None
            earlier = poisoned and last_complete_checkpoint(self.output_dir, before=checkpoint_step(poisoned))
            what = (
                f"the weights were already non-finite (resumed from {poisoned}, which holds non-finite weights; "
                f"move it out of {self.output_dir} to resume from {earlier or 'the start'})"
                if poisoned
                else "the weights are non-finite (an earlier update overflowed)"
            )
        elif loss_rank >= 0:
            what = f"the loss is non-finite on rank {loss_rank} (gradient norm {float(norm):g})"
        else:
            what = f"the gradient norm is {float(norm):g} (the loss was finite)"
        if not self.steps_in_backward:
            kept = "nothing of this step was applied or saved"
        elif applied is False:
            kept = "DeepSpeed skipped this step (its overflow check saw the non-finite gradients) and nothing was saved"
        else:
            kept = "DeepSpeed applied this step in backward, but nothing of it was saved"
        return (
            f"step {step}: {what}; {kept}, the resume point is "
            f"{resume or 'none (no complete checkpoint yet)'}. Try a lower train.learning_rate or more warmup, "
            f"model.dtype float32 if bf16/fp16 overflowed, and look at the step's rows in {rows} "
            f"(input_ids per rank)"
        )


def deepspeed_step_applied(model) -> bool | None:
    """Whether a DeepSpeed engine applied its latest step (None: not a DeepSpeed engine)."""
    return bool(model.was_step_applied()) if hasattr(model, "was_step_applied") else None


def weights_nonfinite(model) -> bool:
    """Any non-finite trained weight on this rank. A DeepSpeed engine's are read as DeepSpeed holds them: the full fp32
    parameter (ZeRO-3's module parameters are empty partitions; ZeRO-1/2 keep the fp32 masters in the optimizer).
    Every rank must call this: under DeepSpeed each parameter's read is a collective."""
    import torch

    if not hasattr(model, "was_step_applied"):
        return any(not bool(torch.isfinite(p).all()) for p in model.parameters())
    from deepspeed.utils import safe_get_full_fp32_param

    bad = False
    for p in model.module.parameters():
        if p.requires_grad:  # every rank reads every trained parameter, in the same order
            full = safe_get_full_fp32_param(p)
            bad |= not bool(torch.isfinite(p if full is None else full).all())
    return bad
