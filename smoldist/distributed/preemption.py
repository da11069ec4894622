"""Preemption and time limits: stop at a step boundary, save a complete checkpoint, requeue, resume.

SIGUSR1 (Slurm's `--signal=USR1@T` before the time limit), SIGTERM (a workstation's kill, or preemption) and
SIGINT (Ctrl-C) only set a flag; a second Ctrl-C stops the process at once (one line, exit 130). At the end of the
current optimiser step all ranks agree on the flag (one all-reduce), the trainer writes a checkpoint and stops.
During an evaluation the ranks agree after every evaluation batch, and the evaluation ends there
(`EvaluationStopped`): a long evaluation must not use up the time Slurm gives between the signal and the kill. Only
a checkpoint that every rank has finished writing gets the `COMPLETE` marker, and only marked checkpoints are
resumed from, so an interrupted save is never picked up. Under Slurm, rank 0 then requeues the job, which resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from transformers import TrainerCallback

from smoldist import faults
from smoldist.distributed.checkpoints import mark_complete, rotate_checkpoints
from smoldist.distributed.state import any_rank, barrier, under_launcher

STOPPED_EXIT_CODE = 3  # "stopped early with a checkpoint; run again to resume" (a process on its own only)
INTERRUPTED_EXIT_CODE = 130  # a second Ctrl-C: stopped at once, as a shell reports a SIGINT death (128 + 2)


def interrupted_at_once() -> None:
    """A second Ctrl-C: one line (from one rank) and out, skipping the save the first one asked for."""
    if os.environ.get("RANK", "0") == "0":
        os.write(2, b"smoldist: interrupted again: stopped at once; the last complete checkpoint is kept\n")
    os._exit(INTERRUPTED_EXIT_CODE)  # no unwinding: a traceback per rank is what Ctrl-C must not print


class StopFlag:
    """SIGUSR1/SIGTERM/SIGINT set a flag while training runs; the handlers that were there before come back after.

    Use as `with StopFlag() as stop: ...`: scoped, so that a notebook or test that trains and then
    prepares again (forking worker processes) does not leave workers that ignore SIGTERM."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)

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

    def __enter__(self) -> StopFlag:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def _handle(self, signum, frame) -> None:  # a signal handler's signature
        if signum == signal.SIGINT and self.signum is not None:  # Ctrl-C while a stop is under way
            interrupted_at_once()
        self.signum = signum


class EvaluationStopped(Exception):
    """A stop signal arrived during an evaluation: it ends at this batch, and the step's checkpoint is saved."""


class PreemptionCallback(TrainerCallback):
    """Turns a stop signal into save-then-stop at the next step boundary (or evaluation batch), marks finished
    checkpoints, and only then rotates older ones (train.save_total_limit)."""

    def __init__(self, flag: StopFlag):
        self.flag = flag
        self.stopped_at: int | None = None
        self.fault_step = faults.count(faults.SIGNAL_AT_STEP)
        self.fault_eval_batch = faults.count(faults.SIGNAL_AT_EVAL_BATCH)
        self.fault_kill_at = faults.count(faults.KILL_BEFORE_MARK_AT_STEP)
        self.eval_batches = 0

    def on_step_end(self, args, state, control, **kwargs):
        faults.pause(faults.STEP_DELAY_S)  # before the check: a signal sent meanwhile stops at this step
        if self.fault_step is not None and state.global_step == self.fault_step:
            faults.send_stop_signal()
        if any_rank(self.flag.signum is not None):
            self._save_and_stop(state, control)
        return control

    def on_prediction_step(self, args, state, control, **kwargs):
        self.eval_batches += 1
        if self.fault_eval_batch is not None and self.eval_batches == self.fault_eval_batch:
            faults.send_stop_signal()
        if any_rank(self.flag.signum is not None):  # every rank runs the same number of evaluation batches
            self._save_and_stop(state, control)  # the trainer's own control object: still set after the raise
            raise EvaluationStopped(
                f"evaluation stopped by signal {self.flag.signum} after {self.eval_batches} batch(es)"
            )
        return control

    def _save_and_stop(self, state, control) -> None:
        self.stopped_at = state.global_step
        control.should_save = True
        control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank has written its part (DeepSpeed shards are per rank)
        if self.fault_kill_at is not None and state.global_step == self.fault_kill_at:
            faults.kill_self()
        if state.is_world_process_zero:
            # the world it was saved on: a resume onto another world size needs it (distributed/elastic.py)
            mark_complete(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step, args.world_size)
            # only now may older checkpoints go (the trainer's own rotation, before the marker, is off)
            rotate_checkpoints(args.output_dir, args.save_total_limit, state.best_model_checkpoint)
        barrier()
        return control


def stopped_exit_code() -> int:
    """Exit status of a rank that stopped cleanly with a checkpoint.

    0 under a launcher (torchrun/accelerate, srun): a non-zero exit makes torchrun tear the other
    workers down and `srun --kill-on-bad-exit` kill the other nodes, rank 0 included, which may still
    be requeueing or closing W&B. 3 for a process started on its own, so a script can tell
    "stopped, run again" from "done"."""
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
