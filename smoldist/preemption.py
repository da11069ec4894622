"""Preemption and time limits: stop at a step boundary, save a complete checkpoint, requeue, resume.

SIGUSR1 (Slurm's `--signal=USR1@T` before the time limit) and SIGTERM (a workstation's kill, or
preemption) only set a flag. At the end of the current optimiser step all ranks agree on the flag
(one all-reduce), the trainer writes a checkpoint and stops. During an evaluation the ranks agree
after every evaluation batch, and the evaluation ends there (`EvaluationStopped`): a long evaluation
must not use up the time Slurm gives between the signal and the kill. Only a checkpoint that every rank has
finished writing gets the `COMPLETE` marker, and only marked checkpoints are resumed from, so an
interrupted save is never picked up. Under Slurm, rank 0 then requeues the job, which resumes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

from transformers import TrainerCallback

COMPLETE = "COMPLETE"
STOPPED_EXIT_CODE = 3  # "stopped early with a checkpoint; run again to resume" (a process on its own only)
FAULT_ENV = "SMOLDIST_FAULT_SIGNAL_AT_STEP"  # testing aid: send ourselves SIGUSR1 after this step
EVAL_FAULT_ENV = "SMOLDIST_FAULT_SIGNAL_AT_EVAL_BATCH"  # testing aid: ... after this many evaluation batches
END_EVAL_FAULT_ENV = "SMOLDIST_FAULT_SIGNAL_AT_END_EVAL_BATCH"  # ... after this many batches of tracking.eval
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class StopFlag:
    """SIGUSR1/SIGTERM set a flag while training runs; the handlers that were there before come back after.

    Use as `with StopFlag() as stop: ...`: scoped, so that a notebook or test that trains and then
    prepares again (forking worker processes) does not leave workers that ignore SIGTERM."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def __enter__(self) -> "StopFlag":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.signum = signum


def any_rank(flag: bool) -> bool:
    """True on every rank if any rank saw the signal (ranks may get it at slightly different times)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class EvaluationStopped(Exception):
    """A stop signal arrived during an evaluation: it ends at this batch, and the step's checkpoint is saved."""


class PreemptionCallback(TrainerCallback):
    """Turns a stop signal into save-then-stop at the next step boundary (or evaluation batch), and marks
    finished checkpoints."""

    def __init__(self, flag: StopFlag):
        self.flag = flag
        self.stopped_at: int | None = None
        self.fault_step = int(os.environ[FAULT_ENV]) if os.environ.get(FAULT_ENV) else None
        self.fault_eval_batch = int(os.environ[EVAL_FAULT_ENV]) if os.environ.get(EVAL_FAULT_ENV) else None
        self.eval_batches = 0

    def on_step_end(self, args, state, control, **kwargs):
        if self.fault_step is not None and state.global_step == self.fault_step:
            os.kill(os.getpid(), signal.SIGUSR1)  # a real signal through the real handler
        if any_rank(self.flag.signum is not None):
            self._save_and_stop(state, control)
        return control

    def on_prediction_step(self, args, state, control, **kwargs):
        self.eval_batches += 1
        if self.fault_eval_batch is not None and self.eval_batches == self.fault_eval_batch:
            os.kill(os.getpid(), signal.SIGUSR1)
        if any_rank(self.flag.signum is not None):  # every rank runs the same number of evaluation batches
            self._save_and_stop(state, control)  # the trainer's own control object: still set after the raise
            raise EvaluationStopped(f"evaluation stopped by signal {self.flag.signum} after {self.eval_batches} batch(es)")
        return control

    def _save_and_stop(self, state, control) -> None:
        self.stopped_at = state.global_step
        control.should_save = True
        control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank has written its part (DeepSpeed shards are per rank)
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            # the world it was saved on: a resume onto another world size needs it (smoldist.elastic)
            (path / COMPLETE).write_text(json.dumps({"step": state.global_step, "world_size": args.world_size}))
        barrier()
        return control


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint every rank finished writing; unmarked ones (an interrupted save) are skipped."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in root.iterdir() if (m := _CHECKPOINT_RE.match(p.name)) and p.is_dir()),
                   reverse=True)
    for _, path in found:
        if (path / COMPLETE).is_file():
            return str(path)
    return None


def stopped_exit_code() -> int:
    """Exit status of a rank that stopped cleanly with a checkpoint.

    0 under a launcher (torchrun/accelerate, srun): a non-zero exit makes torchrun tear the other
    workers down and `srun --kill-on-bad-exit` kill the other nodes, rank 0 included, which may still
    be requeueing or closing W&B. 3 for a process started on its own, so a script can tell
    "stopped, run again" from "done"."""
    from smoldist.distributed import under_launcher

    return 0 if under_launcher() else STOPPED_EXIT_CODE


def requeue_slurm_job() -> bool:
    """Ask Slurm to requeue this job (it restarts the batch script, which resumes). False outside Slurm."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"smoldist: scontrol requeue {job} failed: {result.stderr.strip()}", flush=True)
        return False
    return True
