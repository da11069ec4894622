"""Faults a cluster throws at a 2-process DDP run, inflicted from outside (marked slow): a rank killed mid-run ends
the launch and the rerun resumes with the losses of an uninterrupted run; a frozen rank ends the job by itself after
`ddp_timeout`; a NaN loss on one rank stops every rank at that step, before anything is saved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from smoldist.distributed.checkpoints import COMPLETE
from smoldist.errors import NonFiniteError
from smoldist.faults import NAN_LOSS_AT_STEP, STEP_DELAY_S
from tests.helpers import CONFIGS, REPO, accelerate, free_port, losses, one_row_recipe, processes_with

pytestmark = pytest.mark.slow

DDP = ["--config_file", str(CONFIGS / "cpu_ddp.yaml"), "--num_processes", "2"]


@pytest.fixture
def recipe(tmp_path, conversations_file):
    return one_row_recipe(tmp_path, conversations_file, max_steps=6, save_steps=2)


def train(recipe, out, *overrides, env=None) -> subprocess.CompletedProcess:
    return accelerate(
        [*DDP, "-m", "smoldist.train", str(recipe), f"train.output_dir={out}", *overrides], env=env, timeout=300
    )


class Launch:
    """A 2-process launch in its own session, its processes tagged so the test can find (and end) only them."""

    def __init__(self, recipe, out, tmp_path, *overrides):
        self.tag = f"SMOLDIST_TEST_TAG={os.getpid()}-{time.time_ns()}"
        env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **{STEP_DELAY_S: "0.3"})
        env["SMOLDIST_TEST_TAG"] = self.tag.split("=", 1)[1]
        self.log = tmp_path / "launch.log"
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--main_process_port",
            str(free_port()),
            *DDP,
            "-m",
            "smoldist.train",
            str(recipe),
            f"train.output_dir={out}",
            "train.max_steps=1000",
            *overrides,
        ]
        with open(self.log, "w") as log:
            self.p = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
            )

    def wait_for(self, path, timeout=240) -> None:
        end = time.monotonic() + timeout
        while not path.exists() and time.monotonic() < end and self.p.poll() is None:
            time.sleep(0.5)
        assert path.exists(), self.log.read_text()[-3000:]

    def rank_pid(self, rank: int) -> int:
        (pid,) = processes_with(self.tag, f"RANK={rank}")
        return pid

    def ended_within(self, seconds: float) -> float:
        start = time.monotonic()
        self.p.wait(timeout=seconds)
        return time.monotonic() - start

    def end(self) -> None:
        for pid in processes_with(self.tag):  # only ours, by the tag
            os.kill(pid, signal.SIGKILL)
        if self.p.poll() is None:
            self.p.kill()


def test_a_rank_killed_mid_run_ends_the_launch_and_the_rerun_resumes_equal(recipe, tmp_path):
    reference = train(recipe, tmp_path / "full")
    assert reference.returncode == 0, reference.stderr[-3000:]
    out = tmp_path / "cut"
    launch = Launch(recipe, out, tmp_path, "train.max_steps=6")
    try:
        launch.wait_for(out / "checkpoint-2" / COMPLETE)
        os.kill(launch.rank_pid(1), signal.SIGKILL)  # the OOM killer, or a node gone
        launch.ended_within(60)
        assert launch.p.returncode != 0
        time.sleep(2)
        assert processes_with(launch.tag) == [], "processes left running after the launcher exited"
    finally:
        launch.end()
    again = train(recipe, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout, again.stdout[-2000:]
    full, resumed = losses(tmp_path / "full"), losses(out)
    assert resumed == pytest.approx(full[len(full) - len(resumed) :], rel=1e-5)


def test_a_frozen_rank_ends_the_job_by_itself_after_ddp_timeout(recipe, tmp_path):
    launch = Launch(recipe, tmp_path / "run", tmp_path, "train.ddp_timeout=10")
    try:
        launch.wait_for(tmp_path / "run" / "checkpoint-2" / COMPLETE)  # training runs
        os.kill(launch.rank_pid(1), signal.SIGSTOP)  # a rank hung in the kernel, or a frozen node
        took = launch.ended_within(180)
        assert launch.p.returncode != 0, launch.log.read_text()[-3000:]
        time.sleep(2)
        assert processes_with(launch.tag) == [], f"processes left running after the launcher exited ({took:.0f} s)"
    finally:
        for pid in processes_with(launch.tag):
            os.kill(pid, signal.SIGCONT)
        launch.end()


def test_a_nan_loss_on_one_rank_stops_every_rank_at_that_step(recipe, tmp_path):
    out = tmp_path / "run"
    p = train(recipe, out, "train.ddp_timeout=60", env={NAN_LOSS_AT_STEP: "3"})  # the last rank's loss is NaN
    assert p.returncode != 0, p.stderr[-3000:]
    assert "smoldist: error: step 3: the loss is non-finite on rank 1" in p.stderr, p.stderr[-3000:]
    assert f"exitcode  : {NonFiniteError.exit_code}" in p.stderr, p.stderr[-3000:]  # not a collective's timeout
    assert (out / "checkpoint-2" / COMPLETE).is_file() and not (out / "checkpoint-4").exists()
    assert sorted(f.name for f in (out / "nonfinite-step-3").iterdir()) == ["rank-0.pt", "rank-1.pt"]
