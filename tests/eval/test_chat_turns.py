"""`smoldist chat --system` and multi-turn: a session keeps the turns, a conversation file is continued, and both
ask the model exactly what the equivalent conversation would."""

from __future__ import annotations

import json

import pytest

from smoldist.cli import main
from smoldist.errors import DataError
from tests.helpers import save_tiny_base


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import AutoTokenizer

    from smoldist.data.templates import load_template

    folder = save_tiny_base(tmp_path_factory.mktemp("chat") / "model")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = load_template("smollm2")
    tok.save_pretrained(folder)
    return folder


def test_a_session_keeps_the_turns_and_a_conversation_file_continues_them(model_dir, tmp_path, capsys):
    from smoldist.eval.generate import ChatSession

    session = ChatSession(str(model_dir), 5, system="Be brief.")
    first, second = session.say("Hi"), session.say("And then?")
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert session.messages[2]["content"] == first
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "And then?"},
    ]
    f = tmp_path / "chat.json"
    f.write_text(json.dumps({"messages": turns}))
    assert (
        main(["chat", str(model_dir), "--conversation", str(f), "--system", "Be brief.", "--max-new-tokens", "5"]) == 0
    )
    assert capsys.readouterr().out == second + "\n"
    lines = tmp_path / "chat.jsonl"
    lines.write_text("".join(json.dumps(m) + "\n" for m in [{"role": "system", "content": "Be brief."}, *turns]))
    assert main(["chat", str(model_dir), "--conversation", str(lines), "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == second + "\n"


def test_system_is_the_system_turn(model_dir, tmp_path, capsys):
    from smoldist.eval.generate import ChatSession

    session = ChatSession(str(model_dir), 5)
    expected = session.reply_to([{"role": "system", "content": "Only JSON."}, {"role": "user", "content": "Hi"}])
    assert main(["chat", str(model_dir), "Hi", "--system", "Only JSON.", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_a_conversation_file_that_is_not_one_is_named(tmp_path):
    from smoldist.eval.generate import read_conversation

    f = tmp_path / "bad.json"
    f.write_text(json.dumps([{"speaker": "user", "text": "hi"}]))
    with pytest.raises(DataError, match=r"bad\.json: expected a list of turns"):
        read_conversation(str(f))
