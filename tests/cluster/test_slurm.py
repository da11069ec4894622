"""On a real two-node Slurm cluster (slurm/local_cluster.sh; root, Debian's slurm packages). Marked slurm.

Covers: one job over two nodes is one world; `smoldist submit` prepares then trains and reuses the
store; a job signalled mid-run requeues, resumes and ends like an uninterrupted one; a failure on
one node ends the whole job with that node's error in the log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, one_row_recipe, ranks
from tests.train.test_dpo_run import dpo_recipe  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slurm
CLUSTER_DIR = "/tmp/smoldist-slurm"


@pytest.fixture(scope="session")
def slurm_env():
    if os.geteuid() != 0:
        pytest.fail("the slurm suite needs root (it starts slurmctld/slurmd); run it as root or deselect -m slurm")
    env = dict(os.environ, CLUSTER_DIR=CLUSTER_DIR)
    cluster = ["bash", str(REPO / "slurm" / "local_cluster.sh")]
    p = subprocess.run([*cluster, "start"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    # the nodes have no GPUs: CPU on purpose (node.sh refuses a GPU config there)
    env.update(
        SLURM_CONF=f"{CLUSTER_DIR}/etc/slurm.conf",
        PYTHON=sys.executable,
        SMOLDIST_REPO=str(REPO),
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        ACCELERATE_CONFIG="cpu_ddp",
    )
    yield env
    subprocess.run([*cluster, "stop"], capture_output=True, env=env, timeout=120)


def run(cmd: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 600)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=kw.pop("cwd", REPO), **kw)


def sbatch(env: dict, *args: str) -> str:
    p = run(["sbatch", "--parsable", *args], env)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().split(";")[0]


def job_field(env: dict, job: str, name: str) -> str | None:
    """A field of `scontrol show job`, or None once the controller has forgotten the job."""
    p = run(["scontrol", "show", "job", "-o", job], env)
    if p.returncode != 0:
        return None
    for part in p.stdout.split():
        if part.startswith(f"{name}="):
            return part.split("=", 1)[1]
    return None


def wait_until(predicate, timeout: float, what: str, step: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_for_end(env: dict, job: str, timeout: float = 300) -> str:
    """Final state of the job (COMPLETED, FAILED, ...; GONE if already purged)."""

    def ended():
        state = job_field(env, job, "JobState")
        return (
            (state or "GONE") if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED") else None
        )

    return wait_until(ended, timeout, f"job {job} to end")


def slow_steps(env: dict) -> dict:
    """A job's env whose steps take 0.25 s more (faults.py): the tiny model trains a step in ~0.02 s, so without it a
    24-step job can end between two polls, before the warning signal that the test sends after step 5 reaches it."""
    return dict(env, SMOLDIST_TEST_STEP_DELAY_S="0.25")


def warn_and_requeue(slurm_env: dict, recipe: Path, log: Path, common: list[str], output_dir: Path) -> str:
    """A 2-node train job, sent Slurm's time-limit warning (USR1) after 5 logged steps: returns its id once it has
    requeued itself (pending, restart count 1)."""
    job = sbatch(
        slow_steps(slurm_env),
        "--nodes=2",
        f"--output={log}",
        "slurm/train.sbatch",
        str(recipe),
        *common,
        f"train.output_dir={output_dir}",
    )
    wait_until(lambda: logged_losses(log) >= 5, 120, "5 logged steps")
    assert run(["scancel", "--signal=USR1", job], slurm_env).returncode == 0

    def requeued() -> bool:
        return job_field(slurm_env, job, "Restarts") == "1" and job_field(slurm_env, job, "JobState") == "PENDING"

    wait_until(requeued, 120, "the job to requeue itself")
    return job


def logged_losses(log: Path) -> int:
    return read_log(log).count("smoldist | step") if log.exists() else 0  # one console line per logging step


def read_log(log: Path) -> str:
    # a process killed mid-write (requeue, KillWait) can cut a UTF-8 character, and two nodes writing one
    # log can interleave one's bytes inside the other's character
    return log.read_text(errors="replace")


def history(run_dir: Path) -> list[tuple[int, float]]:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return [(h["step"], h["loss"]) for h in state["log_history"] if "loss" in h]


def train_uninterrupted(slurm_env: dict, recipe: Path, tmp_path: Path, common: list[str]) -> None:
    """The same training as one uninterrupted 2-node job, in tmp_path/whole: what a cut run must match."""
    whole = run(
        [
            "sbatch",
            "--wait",
            "--nodes=2",
            f"--output={tmp_path}/whole.out",
            "slurm/train.sbatch",
            str(recipe),
            *common,
            f"train.output_dir={tmp_path}/whole",
        ],
        slurm_env,
    )
    assert whole.returncode == 0, read_log(tmp_path / "whole.out")[-3000:]


@pytest.fixture
def recipe(tmp_path, conversations_file):
    return one_row_recipe(tmp_path, conversations_file, max_steps=4, save_steps=1000)


def test_two_node_job_trains_as_one_world(slurm_env, recipe, tmp_path):
    p = run(
        ["sbatch", "--wait", "--nodes=2", f"--output={tmp_path}/%j.out", "slurm/train.sbatch", str(recipe)], slurm_env
    )
    assert p.returncode == 0, p.stderr + "".join(read_log(f) for f in tmp_path.glob("*.out"))
    seen = ranks(tmp_path / "run")
    assert [r["rank"] for r in seen] == [0, 1] and {r["world_size"] for r in seen} == {2}
    assert {r["host"] for r in seen} == {"n1", "n2"}, "the two ranks must run on the two nodes"
    assert len({r["param_sha256"] for r in seen}) == 1


def test_submit_prepares_then_trains_and_reuses_the_store(slurm_env, recipe, tmp_path):
    submit = [
        sys.executable,
        "-m",
        "smoldist",
        "submit",
        str(recipe),
        "--nodes",
        "2",
        "--wait",
        "--logs",
        str(tmp_path / "logs"),
    ]
    first = run(submit, slurm_env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "prepare job" in first.stdout and "train job" in first.stdout
    prep_log = read_log(next((tmp_path / "logs").glob("smoldist-prepare-*.out")))
    assert "smoldist prepare: store" in prep_log
    train_log = read_log(next((tmp_path / "logs").glob("smoldist-train-*.out")))
    assert "reusing store" in train_log and "world size 2" in train_log
    second = run([*submit, f"train.output_dir={tmp_path}/again"], slurm_env, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "exists; no prepare job" in second.stdout
    assert "prepare job" not in second.stdout.replace("no prepare job", "")
    assert len(list((tmp_path / "logs").glob("smoldist-prepare-*.out"))) == 1
    assert len(ranks(tmp_path / "again")) == 2


def test_submit_runs_a_dpo_recipe_on_two_nodes(slurm_env, dpo_recipe, tmp_path):  # noqa: F811
    """`smoldist submit` of a DPO recipe: the prepare job builds the pair store, the 2-node train job computes the
    reference log-probs sharded over both nodes and trains one world."""
    submit = [sys.executable, "-m", "smoldist", "submit", str(dpo_recipe), "--nodes", "2", "--wait"]
    p = run([*submit, "--logs", str(tmp_path / "logs"), "train.max_steps=2"], slurm_env, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "prepare job" in p.stdout and "train job" in p.stdout
    train_log = read_log(next((tmp_path / "logs").glob("smoldist-train-*.out")))
    assert "reusing store" in train_log and "world size 2" in train_log, train_log[-3000:]
    assert "reference log-probs computed for 32 pairs" in train_log and "2 rank(s)" in train_log
    seen = ranks(tmp_path / "run")
    assert [(r["rank"], r["world_size"]) for r in seen] == [(0, 2), (1, 2)] and {r["host"] for r in seen} == {
        "n1",
        "n2",
    }
    assert len({r["param_sha256"] for r in seen}) == 1
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "rewards/accuracies" in h] == [1, 2]


def test_signalled_job_requeues_resumes_and_matches_an_uninterrupted_run(slurm_env, recipe, tmp_path):
    # W&B on (offline), its finish as slow as an online one and longer than the cluster's KillWait (5 s): rank 1 ends
    # first, and the requeue must not wait behind rank 0's finish (srun --kill-on-bad-exit used to kill it there)
    slurm_env = dict(slurm_env, SMOLDIST_TEST_WANDB_FINISH_DELAY_S="15")
    common = ["train.max_steps=40", "train.logging_steps=1", "tracking.wandb.mode=offline"]
    train_uninterrupted(slurm_env, recipe, tmp_path, common)

    log = tmp_path / "cut.out"
    job = warn_and_requeue(slurm_env, recipe, log, common, tmp_path / "cut")
    run(["scontrol", "update", f"JobId={job}", "StartTime=now"], slurm_env)  # skip Slurm's ~2 min hold on requeued jobs
    assert wait_for_end(slurm_env, job) in ("COMPLETED", "GONE")

    text = read_log(log)
    assert "stopped by signal 10" in text and f"requeued Slurm job {job}" in text and "restart 1" in text
    assert "resuming from" in text and "saved model" in text
    a, b = history(tmp_path / "whole"), history(tmp_path / "cut")
    assert [s for s, _ in b] == list(range(1, 41)), "the loss history has a gap or a repeated step"
    assert [s for s, _ in a] == [s for s, _ in b]
    assert [loss for _, loss in b] == pytest.approx([loss for _, loss in a], rel=1e-5)
    runs = sorted((tmp_path / "cut" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({r.name.rsplit("-", 1)[1] for r in runs}) == 1, runs  # one W&B run, requeued


def test_failure_on_one_node_ends_the_whole_job(slurm_env, recipe, tmp_path):
    log = tmp_path / "fail.out"
    job = sbatch(
        slurm_env,
        "--nodes=2",
        f"--output={log}",
        "slurm/train.sbatch",
        str(recipe),
        "train.max_steps=100000",
        "train.logging_steps=1",
        f"train.output_dir={tmp_path}/fail",
    )
    wait_until(lambda: logged_losses(log) >= 3, 120, "training to start")

    def rank1_trainer() -> int | None:  # the training process of rank 1 (on node n2) of this job
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"SLURM_JOB_ID={job}".encode() in env and b"RANK=1" in env and b"LOCAL_RANK=0" in env:
                return int(pid)
        return None

    pid = wait_until(rank1_trainer, 30, "rank 1's process")
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)  # a node's trainer dies (OOM killer, hardware fault)
    state = wait_for_end(slurm_env, job, timeout=120)
    took = time.monotonic() - killed_at
    assert state in ("FAILED", "GONE"), state
    assert took < 120
    text = read_log(log)
    assert "n2" in text and ("exitcode: -9" in text or "Signal 9" in text or "SIGKILL" in text), text[-3000:]
    assert "saved model" not in text


def test_job_warned_on_two_nodes_continues_on_one_node_and_matches(slurm_env, recipe, tmp_path):
    """Elastic resume under Slurm: warned on 2 nodes, requeued, n2 drained, the next start gets 1 node and continues.

    Slurm 22.05 (cons_tres) starts a `--nodes=1-2` job on the range's minimum when it can start it at once
    (seen here with both nodes idle), so the first start asks for 2 and the pending job is then let shrink
    to 1-2 nodes, as an operator would (`scontrol update JobId=<id> NumNodes=1-2 NumTasks=1`)."""
    # 1 row x 128 tokens per micro-batch: accumulation 1 on 2 nodes, 2 on 1 node; the same optimiser steps
    common = ["train.max_steps=24", "train.logging_steps=1", "train.global_batch_tokens=256"]
    train_uninterrupted(slurm_env, recipe, tmp_path, common)

    log = tmp_path / "elastic.out"
    job = warn_and_requeue(slurm_env, recipe, log, common, tmp_path / "elastic")
    assert "restart 0: 2 node(s)" in read_log(log)
    drain = run(["scontrol", "update", "NodeName=n2", "State=DRAIN", "Reason=smoldist-elastic-test"], slurm_env)
    assert drain.returncode == 0, drain.stderr
    try:
        shrink = run(["scontrol", "update", f"JobId={job}", "NumNodes=1-2", "NumTasks=1"], slurm_env)
        assert shrink.returncode == 0, shrink.stderr
        run(["scontrol", "update", f"JobId={job}", "StartTime=now"], slurm_env)
        assert wait_for_end(slurm_env, job) in ("COMPLETED", "GONE")
    finally:
        run(["scontrol", "update", "NodeName=n2", "State=RESUME"], slurm_env)

    text = read_log(log)
    assert "restart 1: 1 node(s)" in text, text[-3000:]
    stopped = int(text.split("stopped by signal 10 after step ")[1].split(";")[0])
    # one trainer on the one node, not copies of it (train.sbatch pins srun's task count to this start's nodes)
    assert text.count(f"resumed step {stopped} on 1 processes (was 2)") == 1, text[-3000:]
    assert text.split("restart 1:")[1].count("[node.sh]") == 1
    seen = ranks(tmp_path / "elastic")
    assert [(r["rank"], r["world_size"], r["host"]) for r in seen] == [(0, 1, "n1")]
    a, b = history(tmp_path / "whole"), history(tmp_path / "elastic")
    assert [s for s, _ in b] == list(range(1, 25)) == [s for s, _ in a]
    worst = max(abs(x - y) / abs(x) for (_, x), (_, y) in zip(a, b))
    print(f"slurm elastic 2 nodes -> 1 node after step {stopped}: max relative loss difference {worst:.2e}")
    assert worst < 1e-5, (a, b)
