"""Real multi-process runs on CPU through `accelerate launch` subprocesses (marked slow).

Each run proves it was distributed: every rank writes the world size it saw and a checksum of its
full parameters; a DDP/ZeRO run must show world size 2 and identical checksums on both ranks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, recipe_dict, write_recipe

pytestmark = pytest.mark.slow
CONFIGS = REPO / "accelerate_configs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate(args: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(free_port()), *args]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **(env or {}))
    p = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)
    return p


def ranks(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "ranks").glob("rank-*.json"))]


def losses(run_dir: Path) -> list[float]:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


@pytest.fixture
def recipe(tmp_path, conversations_file):
    return write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(conversations_file)}],
                                              train={"max_steps": 4, "save_steps": 100, "per_device_train_batch_size": 1}))


def assert_one_job(run_dir: Path, world: int) -> None:
    seen = ranks(run_dir)
    assert [r["rank"] for r in seen] == list(range(world)), seen
    assert {r["world_size"] for r in seen} == {world}
    assert len({r["param_sha256"] for r in seen}) == 1, "ranks ended with different weights"


def test_cpu_ddp_trains_as_one_job(recipe, tmp_path):
    p = accelerate(["--config_file", str(CONFIGS / "cpu_ddp.yaml"), "-m", "smoldist.train", str(recipe)])
    assert p.returncode == 0, p.stderr[-4000:]
    assert_one_job(tmp_path / "run", 2)
    assert "world size 2" in p.stdout


def test_two_processes_match_one_process_with_twice_the_accumulation(recipe, tmp_path):
    common = ["train.global_batch_tokens=512", "train.logging_steps=1"]  # 1 row x 128 tokens: k=4 on 1 process, 2 on 2
    one = accelerate(["--num_processes", "1", "-m", "smoldist.train", str(recipe), *common, f"train.output_dir={tmp_path}/one"])
    assert one.returncode == 0, one.stderr[-4000:]
    two = accelerate(["--config_file", str(CONFIGS / "cpu_ddp.yaml"), "-m", "smoldist.train", str(recipe), *common,
                      f"train.output_dir={tmp_path}/two"])
    assert two.returncode == 0, two.stderr[-4000:]
    assert "grad accumulation 4" in one.stdout and "grad accumulation 2" in two.stdout
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, rel=2e-4), (a, b)


def test_promised_world_size_that_is_not_there_fails_loudly(recipe):
    p = accelerate(["--num_processes", "1", "-m", "smoldist.train", str(recipe)], env={"SMOLDIST_EXPECTED_WORLD_SIZE": "2"})
    assert p.returncode != 0
    assert "world size is 1 but the launch promised 2" in p.stderr
