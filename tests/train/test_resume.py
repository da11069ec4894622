"""Resume only the same run: a checkpoint whose recipe or data differ is refused with what differs and how to start
fresh; `train.resume_from_checkpoint` is honoured; `--fresh` moves the old run aside, never deletes it."""

from __future__ import annotations

import json

import pytest

from smoldist.cli import main
from smoldist.config import load_recipe
from smoldist.errors import RecipeError
from smoldist.train.run import run
from tests.helpers import CONVERSATIONS, write_jsonl


def logged_steps(out) -> list[int]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [h["step"] for h in state["log_history"] if "loss" in h]


def test_a_run_of_another_recipe_or_data_is_refused_before_any_work(tiny_recipe, tmp_path):
    out = tmp_path / "run"
    run(load_recipe(tiny_recipe))  # 3 steps; checkpoints at 2 and 3
    mine = write_jsonl(tmp_path / "mine.jsonl", list(reversed(CONVERSATIONS)) * 3)
    stores = sorted((tmp_path / "store").iterdir())
    with pytest.raises(RecipeError) as e:
        run(load_recipe(tiny_recipe, [f"data.sources.0.path={mine}", "train.max_steps=5"]))
    msg = str(e.value)
    assert f"{out} holds a run of another recipe: data.sources.0.path" in msg and "mine.jsonl" in msg
    assert "--fresh" in msg and "train.output_dir" in msg
    assert sorted((tmp_path / "store").iterdir()) == stores  # refused before the store was built
    with pytest.raises(RecipeError, match=r"train.learning_rate 0.001 -> 0.0001"):
        run(load_recipe(tiny_recipe, ["train.learning_rate=1e-4"]))
    # the same recipe, the same path, other contents: the store key tells
    write_jsonl(tmp_path / "chats.jsonl", CONVERSATIONS * 4)
    with pytest.raises(RecipeError, match=r"holds a run of other data: store key \w+ -> \w+"):
        run(load_recipe(tiny_recipe, ["train.max_steps=5"]))
    assert sorted((tmp_path / "store").iterdir()) == stores  # before: refused only once the new store was built
    assert logged_steps(out) == [1, 2, 3]


def test_resume_from_checkpoint_is_honoured_and_fresh_moves_the_old_run_aside(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "run"
    run(load_recipe(tiny_recipe))
    metrics = run(load_recipe(tiny_recipe, [f"train.resume_from_checkpoint={out}/checkpoint-2", "train.max_steps=4"]))
    assert metrics["resumed_from"] == f"{out}/checkpoint-2"  # that one, not the newest (checkpoint-3)
    with pytest.raises(RecipeError, match=r"train.resume_from_checkpoint: .*checkpoint-9 is not a complete checkpoint"):
        run(load_recipe(tiny_recipe, [f"train.resume_from_checkpoint={out}/checkpoint-9"]))
    with pytest.raises(RecipeError, match=r"train.resume_from_checkpoint=false, but .* holds checkpoints"):
        run(load_recipe(tiny_recipe, ["train.resume_from_checkpoint=false"]))
    mine = write_jsonl(tmp_path / "mine.jsonl", list(reversed(CONVERSATIONS)) * 3)
    assert main(["train", str(tiny_recipe), f"data.sources.0.path={mine}", "--fresh"]) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and (moved[0] / "checkpoint-2").is_dir()  # nothing deleted
    assert f"moved {out} to {moved[0]}" in capsys.readouterr().out
    assert logged_steps(out) == [1, 2, 3]  # a new run from step 1


def test_a_run_from_step_0_gets_a_new_wandb_run_a_resume_keeps_it(tmp_path):
    from smoldist.train.wandb_run import run_id

    first = run_id(str(tmp_path))
    assert run_id(str(tmp_path)) == first  # a resume continues the W&B run
    assert run_id(str(tmp_path), new_run=True) != first  # training from step 0 never logs into the old one


def store_keys(root) -> list:
    return sorted(p for p in root.iterdir() if not p.name.startswith("."))


def files_of(out) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(out.rglob("*"))}


def test_a_finished_run_is_finished_a_rerun_trains_and_writes_nothing(tiny_recipe, tmp_path, capsys):
    out = tmp_path / "run"
    run(load_recipe(tiny_recipe))  # max_steps 3
    before, stores = files_of(out), store_keys(tmp_path / "store")
    start = [line for line in capsys.readouterr().out.splitlines() if "M parameters" in line]
    assert len(start) == 1 and f"store {stores[-1].resolve()}, output {out.resolve()}" in start[0], start
    assert main(["train", str(tiny_recipe)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1, lines  # before: a resumed step 4, a new checkpoint, a re-saved model
    assert "is finished (step 3 of train.max_steps 3)" in lines[0] and str(out.resolve()) in lines[0], lines
    assert "raise train.max_steps" in lines[0]
    assert files_of(out) == before and store_keys(tmp_path / "store") == stores  # (its .cache of source hashes aside)
    assert logged_steps(out) == [1, 2, 3]
    # an epoch-based run: the same once its last epoch is done (before: 0 steps, "train loss 0.0000", re-saved)
    epochs = [f"train.output_dir={tmp_path}/ep", "train.max_steps=-1", "train.num_train_epochs=1"]
    run(load_recipe(tiny_recipe, epochs))
    before = files_of(tmp_path / "ep")
    capsys.readouterr()
    assert main(["train", str(tiny_recipe), *epochs]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and "is finished (epoch 1 of train.num_train_epochs 1)" in lines[0], lines
    assert files_of(tmp_path / "ep") == before
