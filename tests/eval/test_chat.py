"""`smoldist chat` (one prompt, or lines from stdin), the reply budget, `eval --split`, and a run directory that
does not exist: one line naming it, for chat, eval and merge."""

from __future__ import annotations

import io
import json

import pytest

from smoldist.cli import main
from smoldist.eval.gsm8k import read_gsm8k
from tests.helpers import GSM8K_4, save_tiny_base


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The tiny model with the bundled ChatML template, as a run saves it."""
    from transformers import AutoTokenizer

    from smoldist.data.templates import load_template

    folder = save_tiny_base(tmp_path_factory.mktemp("chat") / "model")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = load_template("smollm2")
    tok.save_pretrained(folder)
    return folder


def test_reply_budget_is_the_models_own_else_256(model_dir, tmp_path):
    from transformers import GenerationConfig

    from smoldist.eval.generate import reply_budget

    assert reply_budget(str(model_dir)) == 256
    GenerationConfig(max_new_tokens=400).save_pretrained(tmp_path)
    assert reply_budget(str(tmp_path)) == 400


def test_chat_without_a_prompt_answers_each_line_of_stdin(model_dir, monkeypatch, capsys):
    args = ["chat", str(model_dir), "--max-new-tokens", "6"]
    replies = []
    for prompt in ("What is 2 plus 3?", "Hello!"):
        assert main([*args[:2], prompt, *args[2:]]) == 0
        replies.append(capsys.readouterr().out)
    monkeypatch.setattr("sys.stdin", io.StringIO("What is 2 plus 3?\n\nHello!\n"))  # a blank line is skipped
    assert main(args) == 0
    assert capsys.readouterr().out == "".join(replies)


@pytest.mark.parametrize(
    "command",
    [
        ["chat", "{missing}", "Hi"],
        ["eval", "{missing}", "--data", str(GSM8K_4)],
        ["eval", "{missing}", "--loss"],
        ["merge", "{missing}"],
    ],
)
def test_a_missing_run_directory_is_one_line_naming_it(command, tmp_path, capsys):
    missing = tmp_path / "runs" / "nope"
    assert main([a.format(missing=missing) for a in command]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{missing}: no such directory" in err[0], err
    assert "not a LoRA run" not in err[0]


def test_eval_reads_the_split_it_is_given(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [json.loads(line) for line in GSM8K_4.read_text().splitlines()]
    splits = DatasetDict({"train": Dataset.from_list(rows[:1]), "test": Dataset.from_list(rows[1:])})
    splits.save_to_disk(tmp_path / "d")
    assert len(read_gsm8k(str(tmp_path / "d"), split="test")[0]) == 3
    assert len(read_gsm8k(str(tmp_path / "d"), split="train")[0]) == 1


def test_eval_split_defaults_to_test():
    from smoldist.cli import make_parser

    assert make_parser().parse_args(["eval", "runs/x", "--data", "openai/gsm8k"]).split == "test"
