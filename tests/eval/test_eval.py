"""`smoldist eval`: gsm8k exact match (tiny model, a LoRA run, the real SmolLM2-135M-Instruct) and held-out loss."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from smoldist.cli import main
from smoldist.config import load_recipe
from smoldist.eval.gsm8k import extract_answer, read_gsm8k
from smoldist.train.run import run
from tests.helpers import GSM8K_4, own_eval_loss, recipe_dict, write_jsonl, write_recipe

KEYS = {"question", "completion", "extracted", "gold", "correct"}


def own_reading(text: str) -> str | None:
    """The test's own reading of an answer: the number after '####' (commas/$ dropped, trailing '.' and '.0' cut),
    else the last number."""
    found = re.findall(r"####\s*\$?\s*(-?[0-9.,]*[0-9])", text) or re.findall(r"-?[0-9][0-9,]*(?:\.[0-9]+)?", text)
    if not found:
        return None
    s = found[0 if "####" in text else -1].replace(",", "")
    return s.rstrip("0").rstrip(".") if "." in s else s


def check_result(result: dict, data: Path, n: int) -> None:
    golds = [own_reading(json.loads(line)["answer"]) for line in data.read_text().splitlines()[:n]]
    questions = [json.loads(line)["question"] for line in data.read_text().splitlines()[:n]]
    assert result["n"] == n == len(result["records"])
    assert [r["question"] for r in result["records"]] == questions
    assert [r["gold"] for r in result["records"]] == golds
    for r in result["records"]:
        assert set(r) >= KEYS
        assert r["extracted"] == own_reading(r["completion"])
        assert r["correct"] == (own_reading(r["completion"]) == r["gold"])
    assert result["accuracy"] == pytest.approx(sum(r["correct"] for r in result["records"]) / n)


@pytest.mark.parametrize(
    "text, want",
    [
        ("so 9 * 2 = 18.\n#### 18", ("18", "####")),
        ("#### 1,234.", ("1234", "####")),
        ("#### $70,000", ("70000", "####")),
        ("####18.00", ("18", "####")),
        ("#### -3.50", ("-3.5", "####")),
        ("She has 5 apples, then 7. The answer is 12.", ("12", "last number")),
        ("I do not know.", (None, "none")),
    ],
)
def test_answers_are_read_from_the_hash_line_with_the_last_number_as_fallback(text, want):
    assert extract_answer(text) == want


def test_gsm8k_reader_counts_what_it_skips(tmp_path):
    f = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"question": "1+1?", "answer": "1+1=2\n#### 2"},
            "{bad json",
            {"question": "no answer field"},
            {"question": "q", "answer": "no hash line 4"},
        ],
    )
    items, skipped = read_gsm8k(str(f))
    assert [(i["question"], i["gold"]) for i in items] == [("1+1?", "2")]
    assert dict(skipped) == {"bad_json": 1, "missing_field": 1, "no_gold_answer": 1}


def record_hub_loads(monkeypatch) -> list:
    """datasets.load_dataset (the hub boundary, no network here) replaced by one that records its call and fails."""
    import datasets

    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        raise ConnectionError("offline test")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.mark.parametrize("extra, config", [([], "main"), (["--data-config", "socratic"], "socratic")])
def test_eval_on_hub_gsm8k_names_its_config(monkeypatch, tmp_path, capsys, extra, config):
    calls = record_hub_loads(monkeypatch)
    assert main(["eval", str(tmp_path), "--data", "openai/gsm8k", *extra]) == 2
    assert calls == [(("openai/gsm8k", config), {"data_dir": None, "split": "test", "revision": None})]
    assert "'openai/gsm8k' is not a local file and could not be loaded from the hub" in capsys.readouterr().err


def test_eval_data_config_on_a_local_file_is_a_clear_error(monkeypatch, tmp_path, capsys):
    calls = record_hub_loads(monkeypatch)
    assert [i["gold"] for i in read_gsm8k(str(GSM8K_4), 2)[0]] == ["18", "3"]  # a local file: no hub call
    assert main(["eval", str(tmp_path), "--data", str(GSM8K_4), "--data-config", "main"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert calls == [] and len(err) == 1
    assert f"--data-config main: a hub dataset's config; --data {GSM8K_4} is a local file" in err[0]


def test_eval_on_a_tiny_run_writes_the_json_and_left_padded_batches_match_one_by_one(tiny_recipe, tmp_path, capsys):
    run(load_recipe(tiny_recipe))
    model = str(tmp_path / "run")
    args = ["eval", model, "--data", str(GSM8K_4), "--format", "gsm8k", "-n", "3", "--max-new-tokens", "8"]
    assert main([*args, "--batch-size", "3", "--out", str(tmp_path / "b3.json")]) == 0
    assert "accuracy" in capsys.readouterr().out
    batched = json.loads((tmp_path / "b3.json").read_text())
    check_result(batched, GSM8K_4, 3)
    assert main([*args, "--batch-size", "1", "--out", str(tmp_path / "b1.json")]) == 0
    single = json.loads((tmp_path / "b1.json").read_text())
    assert [r["completion"] for r in batched["records"]] == [r["completion"] for r in single["records"]]


def test_eval_scores_a_lora_run(tmp_path, conversations_file):
    from tests.helpers import LORA, save_tiny_base

    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}], train={"max_steps": 2})
    raw["model"] = {"name_or_path": str(save_tiny_base(tmp_path / "base")), "dtype": "float32", "lora": dict(LORA)}
    run(load_recipe(write_recipe(tmp_path, raw)))
    assert (
        main(
            [
                "eval",
                str(tmp_path / "run"),
                "--data",
                str(GSM8K_4),
                "-n",
                "2",
                "--max-new-tokens",
                "4",
                "--out",
                str(tmp_path / "e.json"),
            ]
        )
        == 0
    )
    check_result(json.loads((tmp_path / "e.json").read_text()), GSM8K_4, 2)


def test_eval_loss_equals_the_trainers_own_eval_of_the_saved_model(tmp_path, conversations_file, capsys):
    raw = recipe_dict(
        tmp_path,
        [{"path": str(conversations_file)}],
        train={"eval_strategy": "steps", "eval_steps": 3, "per_device_eval_batch_size": 2},
    )
    raw["data"]["eval_fraction"] = 0.25
    run(load_recipe(write_recipe(tmp_path, raw)))
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    (final,) = [h["eval_loss"] for h in history if "eval_loss" in h and h["step"] == 3]
    assert main(["eval", str(tmp_path / "run"), "--loss", "--out", str(tmp_path / "loss.json")]) == 0
    assert json.loads((tmp_path / "loss.json").read_text())["eval_loss"] == pytest.approx(final, abs=1e-5)
    assert f"eval loss {final:.4f}" in capsys.readouterr().out


def test_eval_loss_is_the_mean_over_label_tokens_at_any_batch_size(tmp_path, conversations_file):
    """Unpacked rows of different lengths: a mean of batch means would change with the batch size;
    `smoldist eval --loss` must not, and must equal the test's own per-token mean."""
    from transformers import AutoModelForCausalLM

    from smoldist.store.manifest import load_split

    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}], train={"max_steps": 2})
    raw["data"].update(eval_fraction=0.5, packing="none")
    run(load_recipe(write_recipe(tmp_path, raw)))
    out = tmp_path / "run"
    figures = []
    for batch in (1, 3):
        assert (
            main(["eval", str(out), "--loss", "--batch-size", str(batch), "--out", str(tmp_path / f"l{batch}.json")])
            == 0
        )
        figures.append(json.loads((tmp_path / f"l{batch}.json").read_text()))
    rows = load_split(Path(figures[0]["store"]), "eval")
    assert len(rows) >= 4 and len({len(r["input_ids"]) for r in rows}) > 1  # batches of 3 mix lengths
    want, tokens = own_eval_loss(AutoModelForCausalLM.from_pretrained(out).eval(), rows)
    for f in figures:
        assert f["eval_loss"] == pytest.approx(want, abs=1e-5)
        assert f["tokens"] == tokens and f["rows"] == len(rows)


def test_eval_without_data_or_loss_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "give --data FILE" in capsys.readouterr().err


@pytest.mark.real
def test_eval_real_smollm2_instruct_on_real_gsm8k_questions(real_instruct, tmp_path):
    out = tmp_path / "real.json"
    assert (
        main(
            [
                "eval",
                str(real_instruct),
                "--data",
                str(GSM8K_4),
                "--format",
                "gsm8k",
                "-n",
                "4",
                "--batch-size",
                "4",
                "--max-new-tokens",
                "48",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    check_result(result, GSM8K_4, 4)
    assert all(r["completion"] for r in result["records"])  # it answered in words, and stopped at <|im_end|>


def train_with_tracking_eval(tiny_recipe, tmp_path, *overrides: str, **env_extra: str):
    """`smoldist train` with tracking.eval on the 4 gsm8k questions and offline W&B: (process, the run's W&B
    history)."""
    import os
    import subprocess
    import sys

    from smoldist.train.wandb_offline import read_run
    from tests.helpers import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), **env_extra)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "smoldist",
            "train",
            str(tiny_recipe),
            "tracking.wandb.mode=offline",
            f"tracking.eval.data={GSM8K_4}",
            "tracking.eval.max_new_tokens=4",
            *overrides,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    return p, read_run(run_file).history


def test_tracking_eval_scores_the_saved_model_and_logs_to_wandb(tiny_recipe, tmp_path):
    p, history = train_with_tracking_eval(tiny_recipe, tmp_path, "tracking.eval.n=2")
    result = json.loads((tmp_path / "run" / "eval_gsm8k.json").read_text())
    check_result(result, GSM8K_4, 2)
    assert not result["stopped"]
    assert f"smoldist | eval gsm8k | accuracy {result['accuracy']:.1%}" in p.stdout
    logged = [h for h in history if "eval/gsm8k_accuracy" in h]
    assert len(logged) == 1 and logged[0]["eval/gsm8k_accuracy"] == result["accuracy"]


def test_tracking_eval_compare_scores_the_start_too_and_logs_the_verdict(tiny_recipe, tmp_path):
    p, history = train_with_tracking_eval(tiny_recipe, tmp_path, "tracking.eval.n=3", "tracking.eval.compare=true")
    res = json.loads((tmp_path / "run" / "eval_compare.json").read_text())
    check_result(res["base"], GSM8K_4, 3)
    assert res["run"] == json.loads((tmp_path / "run" / "eval_gsm8k.json").read_text())
    assert res["base"]["model"] == "model.init (seed 0)"
    assert res["verdict"] == "no clear difference"  # 3 questions can never reach p < 0.05
    assert f"smoldist | eval gsm8k | no clear difference: gsm8k accuracy {res['run']['accuracy']:.1%} vs" in p.stdout
    (logged,) = [h for h in history if "eval/gsm8k_accuracy" in h]
    assert (
        logged["eval/gsm8k_accuracy_base"] == res["base"]["accuracy"] and logged["eval/gsm8k_p_value"] == res["p_value"]
    )


def test_a_stop_during_tracking_eval_ends_it_at_the_batch_and_keeps_the_saved_model(tiny_recipe, tmp_path):
    """The model is saved before tracking.eval: a stop signal (Slurm's time limit) must not wait for every question."""
    p, history = train_with_tracking_eval(
        tiny_recipe,
        tmp_path,
        "tracking.eval.n=4",
        "tracking.eval.batch_size=1",
        SMOLDIST_FAULT_SIGNAL_AT_END_EVAL_BATCH="2",
    )
    assert "eval gsm8k stopped by signal 10 after 2 of 4 questions" in p.stdout, p.stdout[-2000:]
    result = json.loads((tmp_path / "run" / "eval_gsm8k.json").read_text())
    check_result(result, GSM8K_4, 2)
    assert result["stopped"] and result["asked"] == 4
    assert (tmp_path / "run" / "model.safetensors").exists() and "saved model to" in p.stdout
    assert not [h for h in history if "eval/gsm8k_accuracy" in h]  # a partial score is not the run's
