"""The training console: one `smoldist |` line per logging step and per evaluation, no raw trainer dicts."""

from __future__ import annotations

import json

from conftest import recipe_dict, write_recipe
from smoldist.config import load_recipe
from smoldist.train import run


def test_console_has_one_line_per_log_and_per_eval_and_no_trainer_dicts(tmp_path, conversations_file, capsys):
    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}],
                      train={"max_steps": 4, "eval_strategy": "steps", "eval_steps": 2, "logging_steps": 1})
    raw["data"]["eval_fraction"] = 0.25
    run(load_recipe(write_recipe(tmp_path, raw)))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [l.split(" | ")[1] for l in lines if l.startswith("smoldist | ")] == [
        "step 1", "step 2", "eval step 2", "step 3", "step 4", "eval step 4"]
    assert not [l for l in (out + err).splitlines() if "{'" in l], "a raw trainer dict reached the console"
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]  # the dicts are kept where they belong
    assert [h["step"] for h in history if "eval_loss" in h] == [2, 4] and "train_runtime" in history[-1]


def test_chat_prints_the_reply_and_no_loading_bar(tiny_recipe, tmp_path):
    """`smoldist chat` is a one-shot command: the reply on stdout, and no transformers "Loading weights" bar."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    run(load_recipe(tiny_recipe))
    p = subprocess.run([sys.executable, "-m", "smoldist", "chat", str(tmp_path / "run"), "Hi", "--max-new-tokens", "3"],
                       capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(p.stdout.splitlines()) <= 1
    assert "Loading weights" not in p.stderr, p.stderr[-1000:]
