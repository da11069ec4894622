"""Fault injection: switches that tests set in the environment to make a real fault happen at a chosen moment.

Each switch is read in exactly one place of the code, through this module, so that every way a test
reaches inside a run is listed here; unset (as for every user), a switch changes nothing.

    switch                                       the fault                                       read in smoldist/
    SMOLDIST_FAULT_SIGNAL_AT_STEP=N              SIGUSR1 after optimiser step N                  distributed/preemption
    SMOLDIST_FAULT_SIGNAL_AT_EVAL_BATCH=N        SIGUSR1 after N batches of an evaluation        distributed/preemption
    SMOLDIST_FAULT_SIGNAL_AT_END_EVAL_BATCH=N    SIGUSR1 after N batches of `tracking.eval`      eval/end_of_run
    SMOLDIST_TEST_BUILD_DELAY_S=S                the store's builder holds the lock S s more     store/lock
                                                 (a build longer than ddp_timeout)
    SMOLDIST_TEST_WANDB_FINISH_DELAY_S=S         W&B's finish takes S s more (as online)         train/wandb_run
    SMOLDIST_TEST_STEP_DELAY_S=S                 every optimiser step takes S s more (so that    distributed/preemption
                                                 a signal sent from outside lands mid-run)
    SMOLDIST_FAULT_NAN_LOSS_AT_STEP=N            the loss of optimiser step N is NaN on the last  train/trainer
                                                 rank (a divergence or a bf16 overflow)
    SMOLDIST_FAULT_KILL_BEFORE_MARK_AT_STEP=N    SIGKILL after checkpoint-N is written, before    distributed/preemption
                                                 its COMPLETE marker (a crash inside a save)
    SMOLDIST_TEST_FREE_BYTES=B                   the checkpoint filesystem has B bytes free     distributed/checkpoints

Signals are real: sent with os.kill to this process, they go through the handler a user's signal would.
"""

from __future__ import annotations

import os
import signal
import time

SIGNAL_AT_STEP = "SMOLDIST_FAULT_SIGNAL_AT_STEP"
SIGNAL_AT_EVAL_BATCH = "SMOLDIST_FAULT_SIGNAL_AT_EVAL_BATCH"
SIGNAL_AT_END_EVAL_BATCH = "SMOLDIST_FAULT_SIGNAL_AT_END_EVAL_BATCH"
BUILD_DELAY_S = "SMOLDIST_TEST_BUILD_DELAY_S"
WANDB_FINISH_DELAY_S = "SMOLDIST_TEST_WANDB_FINISH_DELAY_S"
STEP_DELAY_S = "SMOLDIST_TEST_STEP_DELAY_S"
NAN_LOSS_AT_STEP = "SMOLDIST_FAULT_NAN_LOSS_AT_STEP"
KILL_BEFORE_MARK_AT_STEP = "SMOLDIST_FAULT_KILL_BEFORE_MARK_AT_STEP"
FREE_BYTES = "SMOLDIST_TEST_FREE_BYTES"


def count(switch: str) -> int | None:
    """The step or batch number a switch names; None when it is not set."""
    value = os.environ.get(switch)
    return int(value) if value else None


def send_stop_signal() -> None:
    """SIGUSR1 to this process: the stop a Slurm time limit sends, through the real handler."""
    os.kill(os.getpid(), signal.SIGUSR1)


def kill_self() -> None:
    """SIGKILL to this process: no handler, no cleanup, as the OOM killer or a node failure."""
    os.kill(os.getpid(), signal.SIGKILL)


def pause(switch: str) -> None:
    """Sleep the seconds a delay switch names (none when it is not set)."""
    if delay := float(os.environ.get(switch) or 0):
        time.sleep(delay)
