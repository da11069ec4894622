"""Launch planning: the exact per-node commands for 1 GPU, 8 GPUs and 4 nodes x 8 GPUs (--dry-run), and the
launcher scripts that write them on a workstation and on each Slurm node.

`--dry-run` is pure planning: it runs in this process (`smoldist.cli.main`); the shell launchers run as scripts.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from smoldist.cli import main
from tests.helpers import REPO


@pytest.fixture
def plan(monkeypatch, capsys):
    """`smoldist train launch/smollm2-135m/smoltalk.yaml ARGS --dry-run` from the repository: (exit code, stdout lines,
    stderr)."""
    monkeypatch.chdir(REPO)  # the recipe path as a user in a checkout writes it

    def dry_run(*args: str, recipe: tuple[str, ...] = ("launch/smollm2-135m/smoltalk.yaml",)):
        code = main(["train", *recipe, *args, "--dry-run"])
        out = capsys.readouterr()
        return code, out.out.strip().splitlines(), out.err

    return dry_run


def test_single_gpu(plan):
    code, (head, node), _ = plan("--accelerate-config", "single_gpu", "--gpus-per-node", "1")
    assert code == 0
    assert "world size 1" in head
    assert node.startswith("node 0: SMOLDIST_EXPECTED_WORLD_SIZE=1 ")
    assert (
        "accelerate_configs/single_gpu.yaml --num_processes 1 --num_machines 1 --main_process_port 29500 "
        "-m smoldist.train launch/smollm2-135m/smoltalk.yaml"
    ) in node
    assert "--machine_rank" not in node


def test_eight_gpus_with_an_override(plan):
    code, (head, node), _ = plan("--accelerate-config", "multi_gpu", "--num-processes", "8", "train.learning_rate=1e-4")
    assert code == 0
    assert "1 node(s) x 8 process(es) = world size 8" in head
    assert "--num_processes 8 --num_machines 1" in node and node.endswith("smoltalk.yaml train.learning_rate=1e-4")


def test_four_nodes_of_eight_gpus(plan):
    code, lines, _ = plan(
        "--accelerate-config",
        "zero3",
        "--num-machines",
        "4",
        "--gpus-per-node",
        "8",
        "--main-process-ip",
        "10.0.0.1",
        "--main-process-port",
        "29611",
    )
    assert code == 0
    assert "4 node(s) x 8 process(es) = world size 32" in lines[0]
    nodes = lines[1:]
    assert len(nodes) == 4
    for rank, line in enumerate(nodes):
        assert line.startswith(f"node {rank}: SMOLDIST_EXPECTED_WORLD_SIZE=32 ")
        assert (
            f"--num_processes 32 --num_machines 4 --machine_rank {rank} --main_process_ip 10.0.0.1 "
            f"--main_process_port 29611 -m smoldist.train"
        ) in line


def test_unknown_config_lists_the_known_ones(plan):
    code, _, err = plan("--accelerate-config", "zero4", recipe=())
    assert code == 2
    assert (
        "'zero4' is neither a file nor one of: cpu_ddp, cpu_zero2, cpu_zero3, fsdp2, multi_gpu, single_gpu, "
        "zero2, zero3, zero3_offload"
    ) in err


def test_uneven_processes_over_machines_is_refused(plan):
    code, _, err = plan("--accelerate-config", "multi_gpu", "--num-processes", "9", "--num-machines", "2", recipe=())
    assert code == 2 and "not divisible" in err


def script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # in case the tests run inside a job
    full.update(PYTHON=sys.executable, **(env or {}))
    return subprocess.run(
        ["bash", f"launch/{name}", *args], capture_output=True, text=True, cwd=REPO, env=full, timeout=120
    )


def test_workstation_launcher_plans_all_gpus():
    p = script("train.sh", "launch/smollm2-135m/gsm8k.yaml", "--gpus", "8", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "multi_gpu.yaml --num_processes 8 --num_machines 1" in p.stdout
    p = script("train.sh", "launch/smollm2-135m/gsm8k.yaml", "--gpus", "1", "--dry-run", "data.seq_len=2048")
    assert "single_gpu.yaml --num_processes 1" in p.stdout and p.stdout.strip().endswith("data.seq_len=2048")
    p = script("train.sh", "launch/smollm2-135m/gsm8k.yaml", "--accelerate-config", "cpu_zero3", "--dry-run")
    assert "cpu_zero3.yaml --num_processes 2" in p.stdout


def test_node_launcher_evaluates_rank_on_the_node():
    env = {"MASTER_ADDR": "n1", "MASTER_PORT": "20001", "SLURM_JOB_NUM_NODES": "4", "GPUS_PER_NODE": "8"}
    for rank in (0, 3):
        # 32 processes need a global batch they can split (the recipe's 65536 tokens suit 1, 2, 4 or 8)
        split = "train.global_batch_tokens=262144"
        p = script(
            "node.sh", "launch/smollm2-135m/gsm8k.yaml", "--dry-run", split, env=dict(env, SLURM_NODEID=str(rank))
        )
        assert p.returncode == 0, p.stderr
        assert f"node {rank} of 4, 8 process(es), config multi_gpu" in p.stdout
        assert (
            f"--num_processes 32 --num_machines 4 --machine_rank {rank} --main_process_ip n1 --main_process_port 20001"
        ) in p.stdout and p.stdout.strip().endswith(split)
        assert p.stdout.count("node ") == 2  # its own banner and its own command, not the other nodes'
    cpu_node = {
        "MASTER_ADDR": "n1",
        "GPUS_PER_NODE": "0",
        "NNODES": "2",
        "NODE_RANK": "1",
        "ACCELERATE_CONFIG": "cpu_ddp",
    }
    p = script("node.sh", "launch/smollm2-135m/gsm8k.yaml", "--dry-run", env=cpu_node)
    assert "node 1 of 2, 1 process(es), config cpu_ddp" in p.stdout


# ---- what runs is what the dry run shows: one plan for both (cluster/launcher.py `plan_from_args`)


def test_processes_without_a_config_plan_a_real_launch(plan, monkeypatch):
    monkeypatch.setattr("smoldist.cluster.launcher.count_gpus", lambda: 0)
    code, (head, node), _ = plan("--num-processes", "2")
    assert code == 0
    assert "world size 2" in head and "accelerate_configs/cpu_ddp.yaml --num_processes 2" in node
    monkeypatch.setattr("smoldist.cluster.launcher.count_gpus", lambda: 8)
    _, (_, node), _ = plan("--num-processes", "8")
    assert "accelerate_configs/multi_gpu.yaml --num_processes 8" in node


def test_a_batch_the_processes_cannot_split_is_refused_before_any_rank_starts(tiny_recipe, capsys):
    """`train`, `train --dry-run` (and `submit`, tests/cluster/test_submit_plan.py) check the split in one plan."""
    recipe = [str(tiny_recipe), "train.per_device_train_batch_size=1", "train.global_batch_tokens=512"]  # 4 rows
    for dry in ([], ["--dry-run"]):  # before: the dry run printed a plan; the run started three ranks
        assert main(["train", *recipe, "--num-processes", "3", *dry]) == 2
        out = capsys.readouterr()
        assert out.out == "" and len(out.err.strip().splitlines()) == 1, out
        assert "3 processes (1 node(s) x 3) cannot split the global batch" in out.err
        assert "process counts that work: 1, 2, 4" in out.err
    assert main(["train", *recipe, "train.global_batch_tokens=200", "--dry-run"]) == 2  # not a whole row
    assert "1 processes (one process, no launcher) cannot split" in capsys.readouterr().err


def test_no_launch_flags_dry_run_shows_the_in_process_run(plan):
    code, (head, node), _ = plan()
    assert code == 0
    assert "runs in this process" in head and "accelerate" not in node
    assert node.endswith("-m smoldist.train launch/smollm2-135m/smoltalk.yaml")


def test_the_launch_passes_the_recipes_precision_not_the_configs(plan):
    # zero3.yaml says mixed_precision: bf16; accelerate would hand that to a float32 recipe's trainer
    code, (_, node), _ = plan("--accelerate-config", "zero3", "--gpus-per-node", "8", "model.dtype=float32")
    assert code == 0 and "accelerate.commands.launch --mixed_precision no --config_file" in node
    code, (_, node), _ = plan("--accelerate-config", "zero3", "--gpus-per-node", "8")  # smoltalk.yaml: bfloat16
    assert code == 0 and "--mixed_precision bf16 --config_file" in node
    code, (_, node), _ = plan("--accelerate-config", "cpu_ddp", "model.dtype=float16")  # fp16 needs GPUs
    assert code == 0 and "--mixed_precision no --config_file" in node
