"""`smoldist submit`: a Slurm prepare job (CPU) and a train job that starts after it succeeds.

    smoldist submit launch/smollm2-135m/smoltalk.yaml --nodes 4 --gpus-per-node 8 --partition gpu --time 24:00:00
    smoldist submit RECIPE --nodes 2 --dry-run      # print the sbatch commands only
    smoldist submit RECIPE --nodes 1-4              # any node count from 1 to 4, on each (re)start

The prepare job is skipped when the store for the recipe already exists. Logs go to logs/ (one
file per job, kept across requeues).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from smoldist.cluster.shipped import share_root
from smoldist.config import load_recipe
from smoldist.errors import SmoldistError
from smoldist.store.plan import plan_store


def job_env() -> dict[str, str]:
    """The jobs run this checkout with this Python, wherever sbatch is called from (sbatch exports the environment)."""
    return dict(os.environ, SMOLDIST_REPO=str(share_root()), PYTHON=sys.executable)


def sbatch(args: list[str]) -> str:
    """Submit and return the job id (sbatch --parsable prints `id[;cluster]`)."""
    p = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, env=job_env())
    if p.returncode != 0:
        raise SmoldistError(f"sbatch failed: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout.strip().split(";")[0]


def node_count(text: str) -> str:
    """`--nodes`: N, or Slurm's MIN-MAX range (each start takes what it gets; training resumes on that world)."""
    import argparse

    parts = str(text).split("-")
    if not (
        1 <= len(parts) <= 2 and all(p.isdigit() and int(p) > 0 for p in parts) and int(parts[0]) <= int(parts[-1])
    ):
        raise argparse.ArgumentTypeError(f"--nodes {text!r}: give N or MIN-MAX with 0 < MIN <= MAX, e.g. 4 or 2-4")
    return str(text)


def submit(recipe_path: str | None, overrides: list[str], nodes: int | str, gpus_per_node: int | None = None,
           partition: str | None = None, time_limit: str | None = None, logs: str = "logs",
           dry_run: bool = False, wait: bool = False, cpus_per_task: int | None = None, mem: str | None = None) -> dict:
    recipe = load_recipe(recipe_path, overrides)  # a bad recipe fails here, not in the queue
    plan = plan_store(recipe.model, recipe.data)
    recipe_args = ([str(Path(recipe_path).resolve())] if recipe_path else []) + list(overrides)
    common = [f"--partition={partition}"] if partition else []
    common += [f"--time={time_limit}"] if time_limit else []
    # the scripts ask for whole nodes (--exclusive --mem=0); these flags override the CPUs / memory per task
    common += ([f"--cpus-per-task={cpus_per_task}"] if cpus_per_task else []) + ([f"--mem={mem}"] if mem else [])
    out = lambda: f"--output={Path(logs).resolve()}/%x-%j.out"  # noqa: E731
    prep_cmd = [*common, out(), str(share_root() / "slurm" / "prepare.sbatch"), *recipe_args]
    train_opts = [*common, out(), f"--nodes={nodes}"] + ([f"--gpus-per-node={gpus_per_node}"] if gpus_per_node else [])
    train_script = [str(share_root() / "slurm" / "train.sbatch"), *recipe_args]
    need_prepare = not (plan.path / "manifest.json").is_file()

    if dry_run:
        if need_prepare:
            print("sbatch --parsable " + shlex.join(prep_cmd))
        dep = ["--dependency=afterok:$PREPARE_JOB_ID", "--kill-on-invalid-dep=yes"] if need_prepare else []
        print("sbatch --parsable " + shlex.join(train_opts + dep + train_script))
        return {"store": str(plan.path), "prepare": need_prepare}
    Path(logs).mkdir(parents=True, exist_ok=True)
    result = {"store": str(plan.path), "prepare_job": None}
    if need_prepare:
        result["prepare_job"] = sbatch(prep_cmd)
        # kill-on-invalid-dep: a failed prepare cancels the train job instead of leaving it pending forever
        train_opts += [f"--dependency=afterok:{result['prepare_job']}", "--kill-on-invalid-dep=yes"]
        print(
            f"smoldist submit: prepare job {result['prepare_job']} -> {plan.path}; "
            f"log {logs}/smoldist-prepare-{result['prepare_job']}.out"
        )
    else:
        print(f"smoldist submit: store {plan.path} exists; no prepare job")
    if wait:  # block until the train job ends (scripts, tests); its exit status becomes ours
        p = subprocess.run(
            ["sbatch", "--parsable", "--wait", *train_opts, *train_script],
            capture_output=True,
            text=True,
            env=job_env(),
        )
        result["train_job"] = p.stdout.strip().split(";")[0]
        result["returncode"] = p.returncode
    else:
        result["train_job"] = sbatch(train_opts + train_script)
    print(
        f"smoldist submit: train job {result['train_job']} on {nodes} node(s); "
        f"log {logs}/smoldist-train-{result['train_job']}.out"
    )
    return result
