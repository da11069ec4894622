"""`smoldist eval RUN --data FILE --format prompt_completion`: generations scored against the completions, exact
match or as JSON (parses, equal as objects), and `--compare` with the gsm8k sign test."""

from __future__ import annotations

import json

import pytest

from smoldist.cli import main
from smoldist.eval.task import score
from tests.helpers import save_tiny_base, write_jsonl


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import AutoTokenizer

    from smoldist.data.templates import load_template

    folder = save_tiny_base(tmp_path_factory.mktemp("task") / "model")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = load_template("smollm2")
    tok.save_pretrained(folder)
    return folder


def test_json_scoring_parses_and_compares_objects_not_text():
    assert score(' {"a": 1, "b": [1, 2]} ', '{"b": [1,2], "a": 1}', "json") == {
        "exact": False,
        "parses": True,
        "equal": True,
        "correct": True,
    }
    assert score('{"a": 1', '{"a": 1}', "json")["parses"] is False
    assert score('{"a": 2}', '{"a": 1}', "json") == {"exact": False, "parses": True, "equal": False, "correct": False}
    assert score(" 42\n", "42", "exact")["correct"] is True


def run_eval(model_dir, data, out, *flags) -> dict:
    args = ["eval", str(model_dir), "--data", str(data), "--format", "prompt_completion", "--max-new-tokens", "6"]
    assert main([*args, "--out", str(out), *flags]) == 0
    return json.loads(out.read_text())


def test_exact_match_scores_the_generations_against_the_completions(model_dir, tmp_path, capsys):
    prompts = ["What is 2 plus 3?", "Name a colour.", "Say hi.", "Count to 3."]
    data = write_jsonl(tmp_path / "task.jsonl", [{"prompt": p, "completion": "no"} for p in prompts])
    first = run_eval(model_dir, data, tmp_path / "a.json")
    assert first["n"] == 4 and first["format"] == "prompt_completion" and first["metric"] == "exact"
    said = [r["completion"] for r in first["records"]]
    # the gold of the first two is what the model says: exact match finds exactly those
    gold = write_jsonl(
        tmp_path / "gold.jsonl",
        [{"prompt": p, "completion": s if i < 2 else s + " x"} for i, (p, s) in enumerate(zip(prompts, said))],
    )
    res = run_eval(model_dir, gold, tmp_path / "b.json")
    assert [r["correct"] for r in res["records"]] == [True, True, False, False] and res["accuracy"] == 0.5
    assert "exact match 50.0% (2/4)" in capsys.readouterr().out


def test_json_metric_and_an_object_completion_as_json_dumps_writes_it(model_dir, tmp_path, capsys):
    data = write_jsonl(
        tmp_path / "j.jsonl", [{"prompt": "Give JSON", "completion": {"a": 1}}, {"prompt": "Q", "completion": "[1]"}]
    )
    res = run_eval(model_dir, data, tmp_path / "j.json", "--metric", "json")
    assert [r["gold"] for r in res["records"]] == ['{"a": 1}', "[1]"]
    assert res["json_parses"] == sum(r["parses"] for r in res["records"]) / 2
    assert res["json_equal"] == res["accuracy"]
    assert "JSON parses" in capsys.readouterr().out


def test_compare_uses_the_sign_test(model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "Hi", "completion": "x"}, {"prompt": "Yo", "completion": "y"}])
    args = ["eval", str(model_dir), "--data", str(data), "--format", "prompt_completion", "--max-new-tokens", "4"]
    assert main([*args, "--compare", str(model_dir), "--out", str(tmp_path / "c.json")]) == 0
    res = json.loads((tmp_path / "c.json").read_text())
    assert res["metric"] == "exact match" and (res["wins"], res["losses"], res["p_value"]) == (0, 0, 1.0)
    assert "no clear difference: exact match" in capsys.readouterr().out


def test_metric_with_gsm8k_is_refused(model_dir, capsys):
    assert main(["eval", str(model_dir), "--data", "x.jsonl", "--metric", "json"]) == 2
    assert "scores --format prompt_completion" in capsys.readouterr().err
