"""SFTTrainer with honest throughput: it counts real tokens per micro-batch, times the data fetch, and
adds `perf/*` metrics (summed over ranks) to every training log, printed as one compact line."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback
from trl import SFTTrainer

from smoldist.distributed.checkpoints import (
    check_room,
    directory_bytes,
    free_bytes,
    last_complete_checkpoint,
    load_rng_state,
    out_of_space,
    saved_world,
)
from smoldist.distributed.preemption import EvaluationStopped
from smoldist.distributed.state import max_over_ranks, tell_deepspeed_no_gpu
from smoldist.errors import DiskFullError
from smoldist.model.attention import warn_dense_packed
from smoldist.model.fused_head import check_fsdp2_added_tokens, check_head_unit
from smoldist.model.precision import cast_saved_model, reduce_in_fp32
from smoldist.train.console import eval_line, write_line
from smoldist.train.eval_weighting import TokenWeightedEval, blank_row, top_up
from smoldist.train.nonfinite import NonFiniteGuard
from smoldist.train.throughput import ThroughputMeter


def tied_names(model) -> set[str]:
    """Parameter names that are another name of a parameter listed before them (tied weights)."""
    first: dict[int, str] = {}
    tied = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            tied.add(name)
        first.setdefault(id(p), name)
    return tied


class SmoldistTrainer(SFTTrainer):
    meter: ThroughputMeter | None = None
    ship_dtype: str | None = None  # the final model is rewritten in this dtype (fp32 masters trained)
    evaluation_cut = False  # the last evaluation was ended by a stop signal (distributed/preemption.py)
    final_saved_step: int | None = None  # the step whose final model is in output_dir, cast to ship_dtype
    guard: NonFiniteGuard | None = None  # stops the run at a non-finite loss or gradient norm (train/nonfinite.py)
    eval_sums: TokenWeightedEval | None = None  # set while an evaluation loop runs

    def __init__(self, *args, **kwargs):
        tell_deepspeed_no_gpu(os.environ)  # before the Trainer's accelerator asks DeepSpeed which device it has
        super().__init__(*args, **kwargs)

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        reduce_in_fp32(self.accelerator.state)  # before prepare() builds FSDP2 / the DeepSpeed engine from these

    def _prepare_for_training(self, *args, **kwargs):
        check_fsdp2_added_tokens(self.model, str(self.accelerator.distributed_type.value))  # before fully_shard
        model, dataloader = super()._prepare_for_training(*args, **kwargs)
        check_head_unit(model)  # FSDP2: TRL's fused head must meet an unsharded lm_head (model/fused_head.py)
        return model, dataloader

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # Checkpoints keep fp32 weights; the final model is cast to model.dtype. Nothing is pushed from here:
        # train/run.py pushes once, after the recipe, loss curve, state and evaluation are written beside the model.
        final = output_dir is None or Path(output_dir).resolve() == Path(self.args.output_dir).resolve()
        if final and self.final_saved_step == self.state.global_step:
            return  # push_to_hub saves again: what is on disk is this step's model, already cast (same on every rank)
        super().save_model(output_dir, _internal_call=True)
        if final:
            if self.ship_dtype is not None and self.is_world_process_zero():
                cast_saved_model(self.args.output_dir, self.ship_dtype)
            self.final_saved_step = self.state.global_step

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # The trainer fetches all micro-batches of one optimiser step here: that is the data wait.
        start = time.perf_counter()
        out = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.meter is not None:
            self.meter.waited(time.perf_counter() - start)
        return out

    def evaluate(self, *args, **kwargs) -> dict:
        self.evaluation_cut = False
        try:
            return super().evaluate(*args, **kwargs)
        except EvaluationStopped as e:  # the stop callback has set should_save and should_training_stop
            self.evaluation_cut = True
            if self.is_world_process_zero():
                write_line(f"smoldist | {e}; saving a checkpoint at step {self.state.global_step}")
            return {}

    def get_eval_dataloader(self, eval_dataset=None):
        ds = self.eval_dataset if eval_dataset is None else eval_dataset
        if self.args.world_size > 1 and hasattr(ds, "column_names"):  # no row seen twice by even_batches
            pad = getattr(self.processing_class, "pad_token_id", None) or 0
            eval_dataset = top_up(ds, self.args.world_size * self.args.eval_batch_size, self.blank_row(pad))
        return super().get_eval_dataloader(eval_dataset)

    def blank_row(self, pad_id: int) -> dict:
        """What tops up the eval split so that every rank runs the same batches (a DPO row holds a blank pair)."""
        return blank_row(pad_id)

    def evaluation_loop(self, *args, **kwargs):
        self.eval_sums = TokenWeightedEval()
        try:
            output = super().evaluation_loop(*args, **kwargs)
            prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
            output.metrics[f"{prefix}_loss"] = self.eval_sums.mean(self.accelerator)  # per label token, all ranks
        finally:
            self.eval_sums = None
        return output

    def _determine_best_metric(self, metrics, trial) -> bool:
        if self.evaluation_cut:  # no metrics; True keeps save_strategy "best" saving the stop's checkpoint
            return True
        return super()._determine_best_metric(metrics, trial)

    def compute_loss(self, model, inputs, *args, **kwargs):
        if self.is_world_process_zero():  # train and eval both come here: sdpa/eager on packed rows warn once
            warn_dense_packed(self.model.config._attn_implementation, inputs)
        out = super().compute_loss(model, inputs, *args, **kwargs)
        if self.guard is not None and model.training and self.guard.poisoned(self.state.global_step + 1):
            return (out[0] * float("nan"), *out[1:]) if isinstance(out, tuple) else out * float("nan")
        if self.eval_sums is not None and not model.training:
            self.eval_sums.add(out[0] if isinstance(out, tuple) else out, inputs["labels"])
        return out

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.meter is not None:
            self.meter.count(inputs)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.guard is not None:
            self.guard.saw(loss, inputs)
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # transformers calls this once per optimiser step, after the norm is known and before the optimiser steps
        grad_norm = super()._get_grad_norm(model, grad_norm)
        if self.guard is not None:
            self.guard.check(self.state.global_step + 1, grad_norm, model)
        return grad_norm

    def _save_checkpoint(self, model, trial):
        step, out = self.state.global_step, self.args.output_dir
        last = last_complete_checkpoint(out)
        needed = directory_bytes(last) if last else self.state_bytes()
        refused = check_room(out, step, needed)
        if max_over_ranks([float(refused is not None)])[0]:  # every rank stops here, together
            raise DiskFullError(refused or f"disk full on another rank while saving checkpoint-{step} in {out}")
        limit, self.args.save_total_limit = self.args.save_total_limit, None  # rotated after the COMPLETE marker
        failed = None
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as e:
            if not out_of_space(e, out, needed):
                raise
            failed = (
                f"disk full: writing checkpoint-{step} in {out} failed ({str(e).splitlines()[0][:80]}); "
                f"{free_bytes(out, measured=True):,} bytes free, about {needed:,} needed; free space and run "
                f"again to resume from {last or 'the start (no complete checkpoint yet)'}"
            )
        finally:
            self.args.save_total_limit = limit
        if max_over_ranks([float(failed is not None)])[0]:
            if self.is_world_process_zero():
                shutil.rmtree(Path(out) / f"checkpoint-{step}", ignore_errors=True)  # unmarked: give its space back
            raise DiskFullError(failed or f"disk full on another rank while saving checkpoint-{step} in {out}")

    def state_bytes(self) -> int:
        """What a checkpoint of this run holds, before one exists: parameters and optimiser state, in bytes."""
        import torch

        tensors = list(self.model.parameters())
        if self.optimizer is not None:
            tensors += [t for st in self.optimizer.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _load_rng_state(self, checkpoint):
        # a checkpoint from another world size names its RNG files differently: restore per rank
        if checkpoint is not None and saved_world(checkpoint) not in (None, self.args.world_size):
            load_rng_state(checkpoint, self.args.process_index)
        else:
            super()._load_rng_state(checkpoint)

    def _issue_warnings_after_load(self, load_result) -> None:
        # a tied weight (lm_head = embed_tokens) is saved once, so it is "missing" from every checkpoint of a tied
        # model; it is loaded all the same, through the tensor it shares: not worth a warning on every resume
        tied = tied_names(self.model)
        super()._issue_warnings_after_load(
            load_result._replace(missing_keys=[k for k in load_result.missing_keys if k not in tied])
        )

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if self.meter is not None and "loss" in logs:  # a training log (not eval): every rank is here
            logs.update(self.meter.report())
            if self.is_world_process_zero():
                write_line(compact_line(self.state.global_step, logs))
        elif "eval_loss" in logs and self.is_world_process_zero():
            write_line(eval_line(self.state.global_step, logs))
        super().log(logs, start_time)


class StepCounter(TrainerCallback):
    def __init__(self, meter: ThroughputMeter):
        self.meter = meter

    def on_train_begin(self, args, state, control, **kwargs):
        self.meter.reset()  # the first window starts with training, not with model setup

    def on_step_end(self, args, state, control, **kwargs):
        self.meter.optimizer_step()


def compact_line(step: int, logs: dict) -> str:
    parts = [f"step {step}", f"loss {logs['loss']:.4f}"]
    parts.append(f"{logs['perf/tokens_per_s_per_device']:,.0f} tok/s/dev")
    parts.append(f"trained {logs['perf/trained_tokens_per_s_per_device']:,.0f} tok/s/dev")
    if "perf/mfu" in logs:
        parts.append(f"MFU {logs['perf/mfu']:.1%}")
    parts.append(f"{logs['perf/tflops_per_device']:.3g} TFLOP/s/dev")
    parts.append(f"data wait {logs['perf/data_wait_fraction']:.1%}")
    parts.append(f"step {logs['perf/step_time_s']:.3f}s")
    parts.append(f"peak mem {logs['perf/peak_memory_gib']:.2f} GiB")
    return "smoldist | " + " | ".join(parts)
