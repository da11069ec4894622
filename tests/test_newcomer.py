"""The newcomer's path end to end, as a user types it (the `smoldist` command in subprocesses, on CPU):

own JSONL in another directory -> preview -> train -> a second train with other data in the same output_dir
(refused in one line; --fresh starts over) -> --num-processes 2 really runs 2 processes, as its dry run shows
-> eval and chat on the run. Every step has a hard timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import CONVERSATIONS, GSM8K_4, assert_one_job, recipe_dict, write_jsonl, write_recipe

pytestmark = pytest.mark.slow


def smoldist(cwd, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    return subprocess.run(
        [sys.executable, "-m", "smoldist", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def one_line_error(p: subprocess.CompletedProcess) -> str:
    """A user mistake: exit 2, one line on stderr, no traceback."""
    assert p.returncode == 2, p.stderr[-3000:]
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr[-3000:]
    return lines[0]


def test_own_data_to_two_processes_eval_and_chat(tmp_path):
    data, work = tmp_path / "my-data", tmp_path / "work"
    data.mkdir(), work.mkdir()
    mine = write_jsonl(data / "chats.jsonl", CONVERSATIONS * 5)
    other = write_jsonl(data / "other.jsonl", list(reversed(CONVERSATIONS)) * 5)
    raw = recipe_dict(
        tmp_path,
        [{"path": str(mine), "format": "messages"}],
        train={"output_dir": str(tmp_path / "run"), "save_steps": 2},
    )
    recipe = str(write_recipe(tmp_path, raw))
    run = tmp_path / "run"

    p = smoldist(work, "preview", recipe, "-n", "1")
    assert p.returncode == 0 and ".jsonl:1 (source 0)" in p.stdout and "What is 2 plus 3?" in p.stdout, p.stderr[-3000:]

    p = smoldist(work, "train", recipe)
    assert p.returncode == 0 and (run / "model.safetensors").is_file(), p.stderr[-3000:]

    # other data into the same output_dir: refused before any work, never a silent resume
    line = one_line_error(smoldist(work, "train", recipe, f"data.sources.0.path={other}", "train.max_steps=5"))
    assert f"{run} holds a run of another recipe: data.sources.0.path {mine} -> {other}" in line and "--fresh" in line
    p = smoldist(work, "train", recipe, f"data.sources.0.path={other}", "--fresh")
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"--fresh: moved {run} to {run}.old-" in p.stdout and "resuming" not in p.stdout

    # --num-processes 2: what runs is what the dry run shows, and it is one 2-process job
    two = [f"train.output_dir={tmp_path / 'run2'}", "--num-processes", "2"]
    dry = smoldist(work, "train", recipe, *two, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    planned = [line for line in dry.stdout.splitlines() if line.startswith("node 0: ")]
    assert len(planned) == 1 and "cpu_ddp.yaml --num_processes 2" in planned[0]
    p = smoldist(work, "train", recipe, *two, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"smoldist train: {planned[0]}" in p.stdout.splitlines()
    assert_one_job(tmp_path / "run2", 2)

    # a Slurm job whose processes cannot split the global batch (2 rows x 128 tokens x 2): refused before the queue
    line = one_line_error(
        smoldist(
            work, "submit", recipe, "train.global_batch_tokens=512", "--nodes", "3", "--gpus-per-node", "1", "--dry-run"
        )
    )
    assert "3 processes (3 nodes x 1 GPUs) cannot split the global batch" in line
    assert "process counts that work: 1, 2" in line

    p = smoldist(
        work, "eval", str(run), "--data", str(GSM8K_4), "-n", "2", "--batch-size", "2", "--max-new-tokens", "4"
    )
    assert p.returncode == 0 and "/2)" in p.stdout, p.stderr[-3000:]  # "accuracy 0.0% (0/2)": 2 questions scored
    p = smoldist(work, "chat", str(run), "What is 2 plus 3?", "--max-new-tokens", "4")
    assert p.returncode == 0, p.stderr[-3000:]  # a 3-step model may end its turn at once: the reply can be empty
