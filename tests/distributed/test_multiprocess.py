"""Real multi-process runs on CPU through `accelerate launch` subprocesses (marked slow).

Each run proves it was distributed: every rank writes the world size it saw and a checksum of its
full parameters; a DDP/ZeRO run must show world size 2 and identical checksums on both ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CONFIGS, REPO, accelerate, assert_one_job, free_port, losses, one_row_recipe, ranks

pytestmark = pytest.mark.slow


@pytest.fixture
def recipe(tmp_path, conversations_file):
    return one_row_recipe(tmp_path, conversations_file, max_steps=4, save_steps=100)


def probe_of_saved_model(run_dir: Path) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM

    from smoldist.distributed.fingerprint import PROBE_TOKENS

    model = AutoModelForCausalLM.from_pretrained(run_dir).eval()
    ids = torch.arange(1, PROBE_TOKENS + 1).unsqueeze(0) % model.config.vocab_size
    with torch.no_grad():
        return model(input_ids=ids).logits[0, :, :4].flatten().tolist()


@pytest.mark.parametrize(
    "config, engine", [("cpu_ddp", "ddp"), ("cpu_zero2", "deepspeed-zero2"), ("cpu_zero3", "deepspeed-zero3")]
)
def test_backend_trains_as_one_job_resumes_and_saves_a_reloadable_model(recipe, tmp_path, config, engine):
    cfg = str(CONFIGS / f"{config}.yaml")
    first = accelerate(["--config_file", cfg, "-m", "smoldist.train", str(recipe), "train.max_steps=2"])
    assert first.returncode == 0, first.stderr[-4000:]
    second = accelerate(["--config_file", cfg, "-m", "smoldist.train", str(recipe), "train.max_steps=4"])
    assert second.returncode == 0, second.stderr[-4000:]
    run = tmp_path / "run"
    assert "resuming from" in second.stdout and "checkpoint-2" in second.stdout
    state = json.loads((run / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]
    assert_one_job(run, 2)
    seen = ranks(run)
    assert {r["engine"] for r in seen} == {engine} and {r["backend"] for r in seen} == {"gloo"}
    assert probe_of_saved_model(run) == pytest.approx(seen[0]["probe_logits"], abs=1e-5)


def test_two_nodes_on_one_machine_train_as_one_job(recipe, tmp_path):
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    node = lambda rank: subprocess.Popen(  # noqa: E731
        [
            sys.executable,
            "-m",
            "smoldist",
            "train",
            str(recipe),
            "--accelerate-config",
            "cpu_ddp",
            "--num-machines",
            "2",
            "--gpus-per-node",
            "1",
            "--machine-rank",
            str(rank),
            "--main-process-ip",
            "127.0.0.1",
            "--main-process-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    nodes = [node(0), node(1)]
    outs = [p.communicate(timeout=600) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], [o[1][-3000:] for o in outs]
    assert_one_job(tmp_path / "run", 2)


def test_smoldist_launcher_runs_deepspeed_on_cpu_without_the_no_gpu_warning(recipe, tmp_path):
    """`smoldist train --accelerate-config cpu_zero2`: two ZeRO-2 ranks, and none of DeepSpeed's "Setting accelerator to
    CPU ... unable to detect it" lines (one per process), which every CPU run printed."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "smoldist",
            "train",
            str(recipe),
            "--accelerate-config",
            "cpu_zero2",
            "--num-processes",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false"),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert_one_job(tmp_path / "run", 2)
    assert {r["engine"] for r in ranks(tmp_path / "run")} == {"deepspeed-zero2"}
    assert "Setting accelerator to CPU" not in p.stdout + p.stderr


def test_two_processes_match_one_process_with_twice_the_accumulation(recipe, tmp_path):
    common = ["train.global_batch_tokens=512", "train.logging_steps=1"]  # 1 row x 128 tokens: k=4 on 1 process, 2 on 2
    one = accelerate(
        ["--num_processes", "1", "-m", "smoldist.train", str(recipe), *common, f"train.output_dir={tmp_path}/one"]
    )
    assert one.returncode == 0, one.stderr[-4000:]
    two = accelerate(
        [
            "--config_file",
            str(CONFIGS / "cpu_ddp.yaml"),
            "-m",
            "smoldist.train",
            str(recipe),
            *common,
            f"train.output_dir={tmp_path}/two",
        ]
    )
    assert two.returncode == 0, two.stderr[-4000:]
    assert "grad accumulation 4" in one.stdout and "grad accumulation 2" in two.stdout
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, rel=2e-4), (a, b)


def test_promised_world_size_that_is_not_there_fails_loudly(recipe):
    p = accelerate(
        ["--num_processes", "1", "-m", "smoldist.train", str(recipe)], env={"SMOLDIST_EXPECTED_WORLD_SIZE": "2"}
    )
    assert p.returncode != 0
    assert "world size is 1 but the launch promised 2" in p.stderr


def test_two_process_run_makes_exactly_one_wandb_run(recipe, tmp_path):
    from smoldist.train.wandb_offline import read_run

    p = accelerate(
        [
            "--config_file",
            str(CONFIGS / "cpu_ddp.yaml"),
            "-m",
            "smoldist.train",
            str(recipe),
            "tracking.wandb.mode=offline",
            "tracking.peak_tflops=0.5",
            "train.logging_steps=2",
        ],
        env={"HOME": str(tmp_path)},
    )
    assert p.returncode == 0, p.stderr[-4000:]
    files = sorted((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    run = read_run(files[0])
    assert run.config["smoldist/world_size"] == 2 and run.config["smoldist/engine"] == "ddp"
    assert [h["train/global_step"] for h in run.history if "train/loss" in h] == [2, 4]
