"""A DPO run's life (marked slow): stopped by a real SIGTERM it resumes exactly; stopped on 2 processes it continues
on 1 (the elastic path of SFT) with the same pairs, and the reference log-probs are read back, never recomputed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smoldist.distributed.checkpoints import COMPLETE
from smoldist.distributed.preemption import STOPPED_EXIT_CODE
from smoldist.faults import SIGNAL_AT_STEP, STEP_DELAY_S
from tests.distributed.test_elastic import stopped_with_checkpoint
from tests.helpers import CONFIGS, REPO, accelerate, assert_one_job, losses
from tests.train.test_dpo_run import dpo_recipe, log_history  # noqa: F401  (dpo_recipe: the fixture)

pytestmark = pytest.mark.slow
# 1 row of 256 tokens per micro-batch, 2 per optimiser step: accumulation 2 on 1 process, 1 on 2; 6 steps is two
# passes over the 24 training pairs' rows, so the resumed part crosses an epoch boundary
COMMON = [
    "train.global_batch_tokens=512",
    "train.max_steps=6",
    "train.save_steps=100",
    "train.lr_scheduler_type=constant",
    "train.logging_steps=1",
]


def metrics(run_dir: Path) -> list[tuple]:
    keys = ("step", "loss", "rewards/accuracies", "rewards/margins", "logps/chosen")
    return [tuple(h[k] for k in keys) for h in log_history(run_dir)]


def assert_same_run(got: list[tuple], want: list[tuple]) -> None:
    assert [m[0] for m in got] == [m[0] for m in want] == list(range(1, 7)), (got, want)
    for g, w in zip(got, want):
        assert g[1:] == pytest.approx(w[1:], rel=1e-5, abs=1e-6), (g, w)


def launch(processes: int, recipe: Path, out: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    cfg = ["--config_file", str(CONFIGS / "cpu_ddp.yaml")] if processes > 1 else []
    args = [*cfg, "--num_processes", str(processes), "-m", "smoldist.train", str(recipe), *COMMON]
    return accelerate([*args, f"train.output_dir={out}"], env=env, timeout=400)


@pytest.fixture
def whole(dpo_recipe, tmp_path):  # noqa: F811
    """The uninterrupted run on one process."""
    p = launch(1, dpo_recipe, tmp_path / "whole")
    assert p.returncode == 0, p.stderr[-4000:]
    assert "reference log-probs computed" in p.stdout
    return metrics(tmp_path / "whole")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)], ids=["2to1", "1to2"])
def test_dpo_stopped_continues_on_another_world_size_with_the_same_pairs(dpo_recipe, tmp_path, whole, before, after):  # noqa: F811
    out = tmp_path / "elastic"
    first = launch(before, dpo_recipe, out, env={SIGNAL_AT_STEP: "3"})
    assert stopped_with_checkpoint(first), first.stderr[-4000:]
    assert "stopped by signal 10 after step 3" in first.stdout
    assert "reference log-probs reused" in first.stdout  # the same store and starting weights as the whole run
    assert json.loads((out / "checkpoint-3" / COMPLETE).read_text())["world_size"] == before
    assert f"world size {before}" in first.stdout and f"grad accumulation {2 // before}" in first.stdout

    second = launch(after, dpo_recipe, out)
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"resumed step 3 on {after} processes (was {before})" in second.stdout, second.stdout[-3000:]
    assert f"world size {after}" in second.stdout and f"grad accumulation {2 // after}" in second.stdout
    assert "reference log-probs reused" in second.stdout and "computed" not in second.stdout
    if after > 1:
        assert_one_job(out, after)
    assert_same_run(metrics(out), whole)  # same pairs in the same steps: the same losses and rewards


@pytest.mark.timeout(600)
def test_dpo_stopped_by_sigterm_resumes_exactly(dpo_recipe, tmp_path, whole):  # noqa: F811
    out, log = tmp_path / "cut", tmp_path / "cut.log"
    cmd = [sys.executable, "-m", "smoldist", "train", str(dpo_recipe), *COMMON, f"train.output_dir={out}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **{STEP_DELAY_S: "0.5"})
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        end = time.monotonic() + 300
        while "smoldist | step 2 " not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < end, log.read_text()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # a workstation's kill, or a scheduler's preemption
        assert proc.wait(timeout=200) == STOPPED_EXIT_CODE, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    stopped = int(text.split(f"stopped by signal {int(signal.SIGTERM)} after step ")[1].split(";")[0].split()[0])
    assert 2 <= stopped < 6 and (out / f"checkpoint-{stopped}" / COMPLETE).is_file()
    assert not (out / "model.safetensors").exists()

    second = launch(1, dpo_recipe, out)
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"checkpoint-{stopped}" in second.stdout and "reference log-probs reused" in second.stdout
    assert_same_run(metrics(out), whole)
    assert losses(out) == pytest.approx([m[1] for m in whole], rel=1e-5)
