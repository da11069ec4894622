"""`smoldist submit`: a Slurm prepare job (CPU) and a train job that starts after it succeeds.

    smoldist submit launch/smollm2-135m/smoltalk.yaml --nodes 4 --gpus-per-node 8 --partition gpu --time 24:00:00
    smoldist submit RECIPE --nodes 2 --dry-run      # print the commands only: they paste and run in bash
    smoldist submit RECIPE --nodes 1-4              # any node count from 1 to 4, on each (re)start

The prepare job is skipped when the store for the recipe already exists; it goes to --prepare-partition
(default: the cluster's default partition) with --prepare-time (default: that partition's limit), never to the
GPU partition with the training job's time. A global batch the train job's processes cannot split is refused
here, before anything waits in the queue. Logs go to logs/ (one file per job, kept across requeues).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from smoldist.cluster.shipped import share_root
from smoldist.config import Recipe, load_recipe
from smoldist.config.batch import check_world_sizes
from smoldist.errors import SmoldistError
from smoldist.store.plan import plan_store

KILL_ON_FAILED_PREPARE = "--kill-on-invalid-dep=yes"  # a failed prepare cancels the train job, not pending forever


def node_count(text: str) -> str:
    """`--nodes`: N, or Slurm's MIN-MAX range (each start takes what it gets; training resumes on that world)."""
    parts = str(text).split("-")
    if not (
        1 <= len(parts) <= 2 and all(p.isdigit() and int(p) > 0 for p in parts) and int(parts[0]) <= int(parts[-1])
    ):
        raise argparse.ArgumentTypeError(f"--nodes {text!r}: give N or MIN-MAX with 0 < MIN <= MAX, e.g. 4 or 2-4")
    return str(text)


@dataclass
class JobRequest:
    """What `smoldist submit` asks Slurm for (its command-line options)."""

    nodes: str = "1"
    gpus_per_node: int | None = None
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    prepare_partition: str | None = None
    prepare_time: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    accelerate_config: str | None = None
    logs: str = "logs"
    dry_run: bool = False
    wait: bool = False

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> JobRequest:
        return cls(**{k: getattr(ns, k) for k in cls.__dataclass_fields__})


def add_submit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nodes",
        type=node_count,
        default="1",
        help="N, or MIN-MAX: take what Slurm gives on each start (elastic resume); default %(default)s",
    )
    p.add_argument(
        "--gpus-per-node",
        type=int,
        help="GPUs per node to ask for, checked against the global batch (default: the partition's)",
    )
    p.add_argument("--partition", help="partition of the train job (default: the cluster's default partition)")
    p.add_argument("--time", help="time limit of the train job, e.g. 24:00:00 (default: the partition's)")
    p.add_argument("--account", help="Slurm account charged for both jobs (default: your default account)")
    p.add_argument(
        "--prepare-partition",
        help="partition of the CPU prepare job (default: the cluster's default partition, not --partition)",
    )
    p.add_argument("--prepare-time", help="time limit of the prepare job, e.g. 2:00:00 (default: the partition's)")
    p.add_argument(
        "--cpus-per-task", type=int, help="CPUs per task (one task per node); default: whole nodes (--exclusive)"
    )
    p.add_argument("--mem", help="memory per node, e.g. 200G; default: all of it (--mem=0)")
    p.add_argument(
        "--accelerate-config",
        help="accelerate config of the train job: a name (`smoldist configs`) or path (default: multi_gpu)",
    )
    p.add_argument("--logs", default="logs", help="directory for the jobs' logs (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the commands (with the environment they need) only")
    p.add_argument("--wait", action="store_true", help="wait until the train job ends; exit with its status")


def job_env(req: JobRequest) -> dict[str, str]:
    """What the jobs need besides the inherited environment: this install, this Python, the accelerate config."""
    env = {"SMOLDIST_REPO": str(share_root()), "PYTHON": sys.executable}
    if req.accelerate_config:
        env["ACCELERATE_CONFIG"] = req.accelerate_config  # launch/node.sh reads it on every node
    return env


def sbatch(args: list[str], req: JobRequest) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sbatch", "--parsable", *args], capture_output=True, text=True, env=dict(os.environ, **job_env(req))
    )


def job_id(p: subprocess.CompletedProcess) -> str:
    """The job id (sbatch --parsable prints `id[;cluster]`)."""
    if p.returncode != 0:
        raise SmoldistError(f"sbatch failed: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout.strip().split(";")[0]


def node_counts(nodes: str) -> list[int]:
    low, _, high = nodes.partition("-")
    return list(range(int(low), int(high or low) + 1))


def check_batch_split(recipe: Recipe, req: JobRequest) -> None:
    """Every world the train job may start on (each node count of a range x --gpus-per-node) must split the batch."""
    if req.gpus_per_node:
        worlds = {n * req.gpus_per_node: f"{n} nodes x {req.gpus_per_node} GPUs" for n in node_counts(req.nodes)}
        check_world_sizes(recipe.train, recipe.data.seq_len, worlds)


def sbatch_options(req: JobRequest) -> tuple[list[str], list[str]]:
    """(prepare job's, train job's) sbatch options."""
    shared = [f"--account={req.account}"] if req.account else []
    # the scripts ask for whole nodes (--exclusive --mem=0); these flags override the CPUs / memory per task
    shared += [f"--cpus-per-task={req.cpus_per_task}"] if req.cpus_per_task else []
    shared += [f"--mem={req.mem}"] if req.mem else []
    shared += [f"--output={Path(req.logs).resolve()}/%x-%j.out"]

    def where(partition: str | None, time: str | None) -> list[str]:
        return ([f"--partition={partition}"] if partition else []) + ([f"--time={time}"] if time else [])

    train = [*where(req.partition, req.time), *shared, f"--nodes={req.nodes}"]
    train += [f"--gpus-per-node={req.gpus_per_node}"] if req.gpus_per_node else []
    return [*where(req.prepare_partition, req.prepare_time), *shared], train


def dry_run_text(prepare: list[str] | None, train: list[str], env: dict[str, str], logs: str) -> str:
    """Lines that paste into bash and submit the same jobs: the environment and the log folder (sbatch does not
    create it) first, the prepare job's id captured."""
    lines = [
        "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()),
        f"mkdir -p {shlex.quote(str(Path(logs).resolve()))}",
    ]
    if prepare is None:
        return "\n".join([*lines, "sbatch --parsable " + shlex.join(train)])
    lines.append(f"PREPARE_JOB_ID=$(sbatch --parsable {shlex.join(prepare)} | cut -d';' -f1)")
    lines.append(f"sbatch --parsable --dependency=afterok:$PREPARE_JOB_ID {KILL_ON_FAILED_PREPARE} {shlex.join(train)}")
    return "\n".join(lines)


def submit(recipe_path: str | None, overrides: list[str], req: JobRequest) -> dict:
    recipe = load_recipe(recipe_path, overrides)  # a bad recipe fails here, not in the queue
    check_batch_split(recipe, req)
    if not req.dry_run and shutil.which("sbatch") is None:
        raise SmoldistError(
            "submit: no `sbatch` on PATH; run it on a Slurm login node, or add --dry-run to print the commands"
        )
    plan = plan_store(recipe.model, recipe.data)
    recipe_args = ([str(Path(recipe_path).resolve())] if recipe_path else []) + list(overrides)
    prep_opts, train_opts = sbatch_options(req)
    prep_cmd = [*prep_opts, str(share_root() / "slurm" / "prepare.sbatch"), *recipe_args]
    train_cmd = [*train_opts, str(share_root() / "slurm" / "train.sbatch"), *recipe_args]
    need_prepare = not (plan.path / "manifest.json").is_file()

    if req.dry_run:
        print(dry_run_text(prep_cmd if need_prepare else None, train_cmd, job_env(req), req.logs))
        return {"store": str(plan.path), "prepare": need_prepare}
    Path(req.logs).mkdir(parents=True, exist_ok=True)
    result = {"store": str(plan.path), "prepare_job": None}
    if need_prepare:
        result["prepare_job"] = job_id(sbatch(prep_cmd, req))
        train_cmd = [f"--dependency=afterok:{result['prepare_job']}", KILL_ON_FAILED_PREPARE, *train_cmd]
        print(
            f"smoldist submit: prepare job {result['prepare_job']} -> {plan.path}; "
            f"log {req.logs}/smoldist-prepare-{result['prepare_job']}.out"
        )
    else:
        print(f"smoldist submit: store {plan.path} exists; no prepare job")
    if req.wait:  # block until the train job ends (scripts, tests); its exit status becomes ours
        p = sbatch(["--wait", *train_cmd], req)
        result["train_job"], result["returncode"] = p.stdout.strip().split(";")[0], p.returncode
    else:
        result["train_job"] = job_id(sbatch(train_cmd, req))
    print(
        f"smoldist submit: train job {result['train_job']} on {req.nodes} node(s); "
        f"log {req.logs}/smoldist-train-{result['train_job']}.out"
    )
    return result
