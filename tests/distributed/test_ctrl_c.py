"""Ctrl-C is a stop signal: the first saves a checkpoint at the step boundary and stops in one line, like SIGTERM;
a second stops at once, still in one line. No KeyboardInterrupt traceback, on any rank."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from smoldist.distributed.checkpoints import COMPLETE
from smoldist.distributed.preemption import INTERRUPTED_EXIT_CODE, STOPPED_EXIT_CODE
from smoldist.faults import STEP_DELAY_S
from tests.helpers import REPO, one_row_recipe, processes_with


@pytest.fixture
def recipe(tmp_path, conversations_file):
    return one_row_recipe(tmp_path, conversations_file, max_steps=100000, save_steps=100000)


def start(args: list[str], log, env: dict):
    """`smoldist train ...` in a session of its own, as a shell starts a foreground job (Ctrl-C: its group)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **env)
    return subprocess.Popen(
        [sys.executable, "-m", "smoldist", "train", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full,
        cwd=REPO,
        start_new_session=True,
    )


def wait_for_a_step(p, log_path) -> None:
    end = time.monotonic() + 300
    while "smoldist | step" not in log_path.read_text() and time.monotonic() < end and p.poll() is None:
        time.sleep(0.5)
    assert "smoldist | step" in log_path.read_text(), log_path.read_text()[-3000:]


def ctrl_c(p, times: int = 1, timeout: int = 180) -> int:
    for _ in range(times):
        os.killpg(p.pid, signal.SIGINT)  # what a terminal does: the whole foreground process group
        time.sleep(0.5)
    try:
        return p.wait(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)


def test_ctrl_c_saves_and_stops_in_one_line_a_second_stops_at_once(recipe, tmp_path):
    out, log_path = tmp_path / "run", tmp_path / "train.log"
    with open(log_path, "w") as log:
        p = start([str(recipe)], log, {STEP_DELAY_S: "1"})
    wait_for_a_step(p, log_path)
    code, text = ctrl_c(p), log_path.read_text()
    assert code == STOPPED_EXIT_CODE, text[-3000:]  # before: 130 and a KeyboardInterrupt traceback, nothing saved
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert "stopped by signal 2 after step" in text
    assert any((c / COMPLETE).is_file() for c in out.glob("checkpoint-*"))
    # run again (it resumes), then Ctrl-C twice within one step: out at once, in one line
    with open(log_path, "w") as log:
        p = start([str(recipe)], log, {STEP_DELAY_S: "4"})
    wait_for_a_step(p, log_path)
    code, text = ctrl_c(p, times=2), log_path.read_text()
    assert code == INTERRUPTED_EXIT_CODE, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert text.count("interrupted again: stopped at once") == 1, text[-3000:]


@pytest.mark.slow
def test_ctrl_c_stops_two_processes_with_a_checkpoint_and_no_traceback(recipe, tmp_path):
    tag = f"{os.getpid()}-{time.time_ns()}"
    log_path, out = tmp_path / "train.log", tmp_path / "run"
    launch = ["--accelerate-config", "cpu_ddp", "--num-processes", "2", "--main-process-port", "0"]
    with open(log_path, "w") as log:
        p = start([str(recipe), *launch], log, {"SMOLDIST_TEST_TAG": tag, STEP_DELAY_S: "1"})
    try:
        wait_for_a_step(p, log_path)
        code, text = ctrl_c(p), log_path.read_text()
        # before: the launcher's SignalException traceback, a KeyboardInterrupt traceback per rank, nothing saved
        assert code == STOPPED_EXIT_CODE, text[-3000:]
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
        assert text.count("stopped by signal 2 after step") == 1, text[-3000:]
        saved = [c for c in out.glob("checkpoint-*") if (c / COMPLETE).is_file()]
        assert saved and {f.name for f in saved[0].glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
        time.sleep(2)
        assert processes_with(f"SMOLDIST_TEST_TAG={tag}") == [], "trainers left running"
    finally:
        for pid in processes_with(f"SMOLDIST_TEST_TAG={tag}"):
            os.kill(pid, signal.SIGKILL)
