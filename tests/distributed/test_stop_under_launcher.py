"""Stopping a multi-process run: ranks that stopped with a checkpoint exit 0 under a launcher (so torchrun
and `srun --kill-on-bad-exit` kill nobody), and a SIGTERM to `smoldist train` reaches the workers. Marked slow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from smoldist.distributed.checkpoints import COMPLETE
from smoldist.faults import SIGNAL_AT_STEP
from tests.helpers import CONFIGS, REPO, accelerate, one_row_recipe, processes_with

pytestmark = pytest.mark.slow


@pytest.fixture
def recipe(tmp_path, conversations_file):
    return one_row_recipe(tmp_path, conversations_file, max_steps=100000, save_steps=100000)


def test_a_clean_stop_exits_zero_under_the_launcher(recipe, tmp_path):
    p = accelerate(
        ["--config_file", str(CONFIGS / "cpu_ddp.yaml"), "--num_processes", "2", "-m", "smoldist.train", str(recipe)],
        env={SIGNAL_AT_STEP: "2"},
        timeout=600,
    )
    assert "stopped by signal 10 after step 2" in p.stdout, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.returncode == 0, p.stderr[-3000:]  # was 1: both ranks exited 3 and torchrun reported the job failed
    assert (tmp_path / "run" / "checkpoint-2" / COMPLETE).is_file()


def test_sigterm_to_smoldist_train_reaches_the_workers(recipe, tmp_path):
    tag = f"SMOLDIST_TEST_TAG={os.getpid()}-{time.time_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", SMOLDIST_TEST_TAG=tag.split("=", 1)[1])
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smoldist",
                "train",
                str(recipe),
                "--accelerate-config",
                "cpu_ddp",
                "--num-processes",
                "2",
                "--main-process-port",
                "0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
    try:
        end = time.monotonic() + 300
        while "smoldist | step" not in log.read_text() and time.monotonic() < end and p.poll() is None:
            time.sleep(1)
        assert "smoldist | step" in log.read_text(), log.read_text()[-3000:]  # training has begun
        p.send_signal(signal.SIGTERM)  # `kill PID` of smoldist train, not of its process group
        p.wait(timeout=120)
        text = log.read_text()
        assert "stopped by signal 15" in text, text[-3000:]
        assert any((c / COMPLETE).is_file() for c in (tmp_path / "run").glob("checkpoint-*"))
        time.sleep(2)
        assert processes_with(tag) == [], "workers left running after smoldist train exited"
    finally:
        for pid in processes_with(tag):  # old behaviour: orphaned trainers; end them (only ours, by the tag)
            os.kill(pid, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
