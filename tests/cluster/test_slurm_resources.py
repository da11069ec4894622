"""What the Slurm jobs ask for (CPUs, memory), what prepare uses, and a GPU job on a GPU-less node (no cluster
needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from smoldist.cli import main
from tests.helpers import REPO, recipe_dict, write_recipe


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # in case the tests run inside a job
    return dict(env, PYTHON=sys.executable, **extra)


def test_sbatch_scripts_ask_for_whole_nodes():
    for script in ("train.sbatch", "prepare.sbatch"):
        text = (REPO / "slurm" / script).read_text()
        assert "#SBATCH --exclusive" in text and "#SBATCH --mem=0" in text, script


def test_submit_passes_cpus_and_memory(tiny_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # planning only: in this process
    args = ["--nodes", "2", "--cpus-per-task", "16", "--mem", "200G", "--dry-run"]
    assert main(["submit", str(tiny_recipe), *args]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.strip().splitlines() if "sbatch" in line]  # after the `export` of the job env
    assert len(lines) == 2 and all("--cpus-per-task=16 --mem=200G" in line for line in lines), out


def test_prepare_uses_the_cpus_it_was_given(tmp_path, conversations_file):
    recipe = write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(conversations_file)}]))
    p = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-m", "smoldist", "prepare", str(recipe), "data.num_proc=null"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    manifest = json.loads(next((tmp_path / "store").glob("*/manifest.json")).read_text())
    assert manifest["num_proc"] == 1  # os.cpu_count() would say every core of the machine


def test_gpu_job_on_a_node_without_gpus_stops_naming_gpus_per_node():
    p = subprocess.run(
        ["bash", "launch/node.sh", "launch/smollm2-135m/gsm8k.yaml", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean_env(MASTER_ADDR="n1", GPUS_PER_NODE="0"),
        timeout=120,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert "has no GPUs" in p.stderr and "--gpus-per-node" in p.stderr and "ACCELERATE_CONFIG=cpu_ddp" in p.stderr
    assert "--accelerate-config" not in p.stdout  # nothing was launched
