"""`smoldist submit` before anything is queued: a global batch the job's processes cannot split is refused with the
counts that work, the dry run's lines paste and run in bash, the prepare job has its own partition and time, and a
machine without sbatch gets one line. No cluster needed (the `slurm` tests run the real one)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from smoldist.cli import main
from smoldist.cluster.shipped import share_root
from tests.helpers import recipe_dict, write_recipe

ROWS, SEQ = 2, 128  # the tiny recipe's per_device_train_batch_size and data.seq_len


@pytest.fixture
def batch_recipe(tmp_path, conversations_file):
    """A recipe whose global batch is 4 micro-batches of one process: 1, 2 or 4 processes can take it."""
    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}], train={"global_batch_tokens": 4 * ROWS * SEQ})
    return write_recipe(tmp_path, raw)


def test_a_global_batch_the_job_cannot_split_is_refused_at_submit(batch_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["submit", str(batch_recipe), "--nodes", "4", "--gpus-per-node", "8", "--dry-run"])
    captured = capsys.readouterr()
    assert code == 2 and "sbatch" not in captured.out, captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1, err
    assert "32 processes (4 nodes x 8 GPUs)" in err[0] and "process counts that work: 1, 2, 4" in err[0], err


def test_every_node_count_of_an_elastic_range_is_checked(batch_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["submit", str(batch_recipe), "--nodes", "1-2", "--gpus-per-node", "2", "--dry-run"]) == 0
    assert main(["submit", str(batch_recipe), "--nodes", "1-3", "--gpus-per-node", "2", "--dry-run"]) == 2
    assert "6 processes (3 nodes x 2 GPUs)" in capsys.readouterr().err


def fake_sbatch_run(text: str, tmp_path) -> list[list[str]]:
    """Run the dry run's lines in bash, with `sbatch` a function that records its arguments and answers a job id."""
    log = tmp_path / "sbatch.log"
    shim = f'sbatch() {{ printf "%s\\n" "$*" >> {log}; echo "4242;cluster"; }}\n'
    env = {k: v for k, v in os.environ.items() if k not in ("SMOLDIST_REPO", "PYTHON", "ACCELERATE_CONFIG")}
    p = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", shim + text + "\nprintenv SMOLDIST_REPO PYTHON\n"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[-2:] == [str(share_root()), sys.executable]  # the environment the jobs need, from the text
    return [line.split() for line in log.read_text().splitlines()]


def test_dry_run_lines_paste_and_run(batch_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [
        "--nodes",
        "2",
        "--gpus-per-node",
        "2",
        "--partition",
        "gpu",
        "--time",
        "24:00:00",
        "--account",
        "proj42",
        "--prepare-partition",
        "cpu",
        "--prepare-time",
        "2:00:00",
        "--accelerate-config",
        "zero3",
        "--dry-run",
    ]
    assert main(["submit", str(batch_recipe), *args]) == 0
    text = capsys.readouterr().out
    assert "'$PREPARE_JOB_ID'" not in text
    assert not (tmp_path / "logs").exists()
    prepare, train = fake_sbatch_run(text, tmp_path)
    assert (tmp_path / "logs").is_dir()  # sbatch does not create the --output folder: the text does
    assert "--partition=cpu" in prepare and "--time=2:00:00" in prepare and "--account=proj42" in prepare
    assert "--partition=gpu" not in prepare and "--nodes=2" not in prepare
    assert "--partition=gpu" in train and "--time=24:00:00" in train and "--account=proj42" in train
    assert "--dependency=afterok:4242" in train and "--kill-on-invalid-dep=yes" in train
    assert "ACCELERATE_CONFIG=zero3" in text  # node.sh reads the config from the job's environment


def test_prepare_job_defaults_to_the_default_partition(batch_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        main(["submit", str(batch_recipe), "--nodes", "1", "--partition", "gpu", "--time", "9:00:00", "--dry-run"]) == 0
    )
    prepare, train = fake_sbatch_run(capsys.readouterr().out, tmp_path)
    assert not any(a.startswith(("--partition", "--time")) for a in prepare), prepare
    assert "--partition=gpu" in train and "--time=9:00:00" in train


def test_submit_without_sbatch_is_one_line(batch_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["submit", str(batch_recipe), "--nodes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sbatch" in err[0] and "--dry-run" in err[0], err


@pytest.mark.parametrize("extra", [[], ["--gpus-per-node", "8"]])
def test_multi_node_launch_needs_the_main_process_ip(extra, monkeypatch, capsys):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    code = main(["train", "--accelerate-config", "multi_gpu", "--num-machines", "2", *extra, "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--main-process-ip" in err[0], err


def test_multi_node_launch_takes_master_addr_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("MASTER_ADDR", "n1")
    assert (
        main(["train", "--accelerate-config", "multi_gpu", "--num-machines", "2", "--gpus-per-node", "8", "--dry-run"])
        == 0
    )
    out = capsys.readouterr().out
    assert "--main_process_ip n1" in out and "127.0.0.1" not in out
