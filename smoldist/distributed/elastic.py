"""Elastic resume: continue a checkpoint on a different number of processes, exactly.

The global batch is stated in tokens and gradient accumulation is derived from the world size, and the
data order does not depend on the world size, so a checkpoint saved on W0 processes can continue on W:

- before anything loads, W must divide the micro-batches of one optimiser step (else: the arithmetic and
  the sizes that work);
- DDP (and one process): weights, optimiser and scheduler are whole in every checkpoint: load as is;
- DeepSpeed ZeRO-2/3: the optimiser state is partitioned W0 ways. The main rank converts the checkpoint to
  DeepSpeed's universal format once (deepspeed.checkpoint.ds_to_universal) while the others poll for its marker
  file, in no collective, so a conversion longer than ddp_timeout cannot time the job out (as the store lock);
  the engine loads it with `checkpoint.load_universal`, re-partitioning onto W;
- RNG: each rank restores the state its rank saved, where that rank existed; ranks that are new start from
  the seed's state, and the log names them (dropout-free SFT does not draw random numbers while training).

The world a checkpoint was saved on is recorded in its COMPLETE marker (distributed/checkpoints.py).
"""

from __future__ import annotations

import os
import shutil
import time
from argparse import Namespace
from pathlib import Path

from transformers import TrainerCallback

from smoldist.config.batch import working_world_sizes
from smoldist.distributed.checkpoints import saved_world
from smoldist.errors import RecipeError

UNIVERSAL_LATEST = "latest_universal"  # the file DeepSpeed reads for the tag when load_universal is on
WAIT_REPORT_S = 30.0  # a waiting rank says so this often


def check_resume_world(
    checkpoint: str, global_batch_tokens: int | None, per_device_rows: int, seq_len: int, world_size: int
) -> int | None:
    """Refuse, before loading, a resume onto a world that cannot take the same global batch. Returns W0."""
    before = saved_world(checkpoint)
    if global_batch_tokens is None or before is None or before == world_size:
        return before
    row_tokens = per_device_rows * seq_len
    if global_batch_tokens % (row_tokens * world_size) == 0:
        return before
    sizes = working_world_sizes(global_batch_tokens, per_device_rows, seq_len)
    works = (
        f"world sizes that work: {', '.join(map(str, sizes))}"
        if sizes
        else f"no world size works with per_device_train_batch_size={per_device_rows}; "
        f"global_batch_tokens must be a multiple of {row_tokens}"
    )
    raise RecipeError(
        f"cannot resume {checkpoint} (saved on {before} processes) on {world_size} processes: "
        f"train.global_batch_tokens "
        f"{global_batch_tokens} / (per_device_train_batch_size {per_device_rows} x seq_len {seq_len}) = "
        f"{global_batch_tokens / row_tokens:g} micro-batches per optimiser step, "
        f"{'not divisible by ' + str(world_size) if sizes else 'not a whole number'}; {works}. "
        f"Nothing was loaded; relaunch with one of those process counts"
    )


def deepspeed_tag(checkpoint: Path) -> str | None:
    """The DeepSpeed tag (`global_stepN`) of a checkpoint, or None if it holds no DeepSpeed state."""
    latest = checkpoint / "latest"
    return latest.read_text().strip() if latest.is_file() else None


def convert_to_universal(checkpoint: str | Path) -> Path:
    """ZeRO checkpoint -> DeepSpeed universal checkpoint next to it (`<tag>_universal` + `latest_universal`).

    Written to a temporary folder and renamed, so an interrupted conversion is redone, never half-used."""
    from deepspeed.checkpoint import ds_to_universal

    checkpoint = Path(checkpoint)
    tag = deepspeed_tag(checkpoint)
    if tag is None:
        raise RecipeError(f"{checkpoint}: no DeepSpeed `latest` file; not a ZeRO checkpoint")
    out = checkpoint / f"{tag}_universal"
    if (checkpoint / UNIVERSAL_LATEST).is_file() and out.is_dir():
        return out
    tmp = checkpoint / f"{tag}_universal.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    # 1 worker each: no process pool inside a rank that holds a process group
    ds_to_universal.main(
        Namespace(
            input_folder=str(checkpoint / tag),
            output_folder=str(tmp),
            num_extract_workers=1,
            num_merge_workers=1,
            keep_temp_folder=False,
            strict=True,
            inject_missing_state=True,
        )
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    marker = checkpoint / f"{UNIVERSAL_LATEST}.tmp"
    marker.write_text(out.name)
    os.replace(marker, checkpoint / UNIVERSAL_LATEST)  # last, and whole: the other ranks wait for this file
    return out


def universal_ready(checkpoint: Path) -> bool:
    """The main rank's conversion is complete (its marker is written after the converted folder is in place)."""
    latest = checkpoint / UNIVERSAL_LATEST
    return latest.is_file() and (checkpoint / latest.read_text().strip()).is_dir()


def wait_for_universal(checkpoint: Path, poll_s: float = 1.0) -> None:
    """Poll for the main rank's conversion; a dead main rank ends the job through its launcher, not through here."""
    t0 = next_report = time.monotonic()
    while not universal_ready(checkpoint):
        if time.monotonic() >= next_report + WAIT_REPORT_S:
            next_report = time.monotonic()
            print(
                f"smoldist train: waiting for the main rank to convert {checkpoint} to a universal checkpoint "
                f"({next_report - t0:.0f} s so far; no collective is pending)",
                flush=True,
            )
        time.sleep(poll_s)


def prepare_resume(trainer, checkpoint: str | None, before: int | None, world_size: int, is_main: bool) -> list[str]:
    """Get a changed-world resume ready before trainer.train() loads it; returns the lines to log."""
    if checkpoint is None or before is None or before == world_size:
        return []
    lines = []
    plugin = trainer.accelerator.state.deepspeed_plugin
    if plugin is not None and deepspeed_tag(Path(checkpoint)) is not None:
        if is_main:
            convert_to_universal(checkpoint)
        else:
            wait_for_universal(Path(checkpoint))
        # read by the engine that trainer.train() creates (accelerator.prepare), then by its load_checkpoint
        plugin.deepspeed_config.setdefault("checkpoint", {})["load_universal"] = True
        lines.append(f"converted {checkpoint} to a DeepSpeed universal checkpoint ({before} -> {world_size} processes)")
    if world_size > before:
        new = ", ".join(map(str, range(before, world_size)))
        lines.append(
            f"RNG state not restored for rank(s) {new} (not in the checkpoint): they start from the seed's "
            f"state; exact for dropout-free training, not for dropout"
        )
    else:
        gone = ", ".join(map(str, range(world_size, before)))
        lines.append(f"RNG state of former rank(s) {gone} not used (those ranks are gone)")
    return lines


def untie_optimizer_steps(optimizer) -> int:
    """Give every optimiser state its own `step` tensor; returns how many were shared.

    DeepSpeed 0.19.8's ZeRO-3 universal load hands all param groups ONE step tensor; fused/foreach AdamW
    increments it in place once per group, so Adam's bias correction would run ahead (seen: a 2e-4 loss
    drift from the first step after resume)."""
    import torch

    while getattr(optimizer, "optimizer", None) is not None:  # accelerate wrapper -> DeepSpeed ZeRO -> torch AdamW
        optimizer = optimizer.optimizer
    seen, shared = set(), 0
    for st in getattr(optimizer, "state", {}).values():
        step = st.get("step") if isinstance(st, dict) else None
        if torch.is_tensor(step):
            if id(step) in seen:
                st["step"] = step.clone()
                shared += 1
            seen.add(id(st["step"]))
    return shared


class ElasticResume(TrainerCallback):
    """Once the checkpoint is loaded: repair what a universal load shares, and say where the run continues."""

    def __init__(self, before: int | None, world_size: int):
        self.before, self.world_size = before, world_size

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        if self.before is None or self.before == self.world_size:
            return control
        untie_optimizer_steps(optimizer)
        if state.is_world_process_zero:
            print(
                f"smoldist train: resumed step {state.global_step} on {self.world_size} processes (was {self.before})",
                flush=True,
            )
        return control
