"""The training console: one `smoldist |` line per logging step and per evaluation, no raw trainer dicts."""

from __future__ import annotations

import json

import pytest

from smoldist.config import load_recipe
from smoldist.train.run import run
from tests.helpers import recipe_dict, write_recipe


def test_console_has_one_line_per_log_and_per_eval_and_no_trainer_dicts(tmp_path, conversations_file, capsys):
    raw = recipe_dict(
        tmp_path,
        [{"path": str(conversations_file)}],
        train={"max_steps": 4, "eval_strategy": "steps", "eval_steps": 2, "logging_steps": 1},
    )
    raw["data"]["eval_fraction"] = 0.25
    run(load_recipe(write_recipe(tmp_path, raw)))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split(" | ")[1] for line in lines if line.startswith("smoldist | ")] == [
        "step 1",
        "step 2",
        "eval step 2",
        "step 3",
        "step 4",
        "eval step 4",
    ]
    assert not [line for line in (out + err).splitlines() if "{'" in line], "a raw trainer dict reached the console"
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]  # the dicts are kept where they belong
    assert [h["step"] for h in history if "eval_loss" in h] == [2, 4] and "train_runtime" in history[-1]


@pytest.mark.parametrize("command", [["chat", "Hi", "--max-new-tokens", "3"], ["eval", "--loss"]])
def test_one_shot_commands_print_no_library_noise(tmp_path, conversations_file, command):
    """`smoldist chat` and `smoldist eval` print their answer, not transformers' "Loading weights" bar or DeepSpeed's
    warning that it found no GPU (it is imported by the Trainer even when it is not the engine)."""
    import os
    import subprocess
    import sys

    from tests.helpers import REPO

    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}], train={"max_steps": 1})
    raw["data"]["eval_fraction"] = 0.25
    run(load_recipe(write_recipe(tmp_path, raw)))
    cmd = [sys.executable, "-m", "smoldist", command[0], str(tmp_path / "run"), *command[1:]]
    p = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(p.stdout.splitlines()) <= 1
    for noise in ("Loading weights", "Setting accelerator to CPU"):
        assert noise not in p.stderr, p.stderr[-1000:]
