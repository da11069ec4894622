"""A conversation longer than seq_len is cut at its turns: every piece starts with the system prompt, holds the
turns before its new ones as context without loss (the oldest trimmed when needed), and trains each assistant turn
once, right after its own prompt; a turn too long even with only its prompt is dropped, counted; plain text keeps the
token split."""

from __future__ import annotations

import pytest

from smoldist.config import ModelConfig, load_recipe
from smoldist.data.converters import Document
from smoldist.data.encode import IGNORE, Encoder
from smoldist.data.templates import load_template
from smoldist.data.tokenizer import load_prep_tokenizer
from smoldist.store.build import prepare
from tests.helpers import recipe_dict, write_jsonl, write_recipe

SYSTEM = {"role": "system", "content": "Be brief."}


def long_conversation(turns: int, words: int = 6, weight0: tuple = ()) -> list[dict]:
    msgs = [SYSTEM]
    for k in range(turns):
        msgs.append({"role": "user", "content": f"question {k} " + "why " * words})
        msgs.append({"role": "assistant", "content": f"answer {k} " + "because " * words})
    return msgs


@pytest.fixture(scope="module")
def tok():
    return load_prep_tokenizer(ModelConfig(tokenizer="pkg:demo/tokenizer", init={"hidden_size": 8}))


def pieces(tok, msgs, seq_len, untrained=()):
    enc = Encoder.for_template(tok, load_template("chatml"), "assistant", seq_len, "split")
    batch = enc.encode([Document(messages=msgs, untrained=untrained)])
    out, start = [], 0
    for n in batch.lengths.tolist():
        ids, labels = batch.ids[start : start + n], batch.labels[start : start + n]
        start += n
        out.append((ids, labels))
    return out, batch


def trained_runs(tok, ids, labels) -> list[tuple[str, str]]:
    """(text before, trained text) for each run of trained tokens."""
    runs, k = [], 0
    trained = labels != IGNORE
    while k < len(ids):
        if trained[k]:
            j = k
            while j < len(ids) and trained[j]:
                j += 1
            runs.append((tok.decode(ids[:k].tolist()), tok.decode(ids[k:j].tolist())))
            k = j
        else:
            k += 1
    return runs


def test_every_piece_trains_its_turns_after_their_prompt_with_the_system_prompt_first(tok):
    msgs = long_conversation(8)
    out, batch = pieces(tok, msgs, 128)
    assert len(out) > 2 and all(len(ids) <= 128 for ids, _ in out)
    assert batch.pieces.tolist() == [len(out)] and batch.cuts[0][1].pieces == len(out)
    answers = []
    for ids, labels in out:
        assert tok.decode(ids.tolist()).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
        for before, run in trained_runs(tok, ids, labels):
            k = int(run.split()[1])  # "answer K because ..."
            assert before.endswith(
                f"<|im_start|>user\nquestion {k} " + "why " * 6 + "<|im_end|>\n<|im_start|>assistant\n"
            )
            answers.append(run)
    assert answers == [m["content"] + "<|im_end|>" for m in msgs if m["role"] == "assistant"]  # each once, in order
    later = tok.decode(out[-1][0].tolist())
    assert "question 0" not in later and batch.cuts[0][1].trimmed > 0  # the oldest context was trimmed to fit


def test_later_pieces_carry_the_latest_earlier_turns_as_context_without_loss(tok):
    msgs = long_conversation(8)
    out, _ = pieces(tok, msgs, 160)
    head = "<|im_start|>system\nBe brief.<|im_end|>\n"
    for ids, labels in out[1:]:
        before, run = trained_runs(tok, ids, labels)[0]
        k = int(run.split()[1])
        context = before[len(head) :]
        assert context.startswith("<|im_start|>user\nquestion ")  # whole turns, from a user turn on
        assert f"answer {k - 1} " in context  # the turn just before is there, untrained


def test_a_turn_too_long_with_its_prompt_is_dropped_and_counted(tok):
    msgs = long_conversation(2)
    msgs[2]["content"] = "answer 0 " + "because " * 300
    out, batch = pieces(tok, msgs, 128)
    cut = batch.cuts[0][1]
    assert cut.turns_dropped == 1 and cut.pieces == 1
    assert [r for _, r in trained_runs(tok, *out[0])] == [msgs[4]["content"] + "<|im_end|>"]


def test_prepare_reports_how_long_conversations_were_cut(tmp_path):
    short = [SYSTEM, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    hopeless = [SYSTEM, {"role": "user", "content": "why " * 300}, {"role": "assistant", "content": "no"}]
    f = write_jsonl(
        tmp_path / "c.jsonl", [{"messages": long_conversation(8)}, {"messages": short}, {"messages": hopeless}]
    )
    r = load_recipe(write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(f)}])))
    m = prepare(r.model, r.data, verbose=False).manifest
    long = m["counts"]["long_conversations"]
    assert long["over_seq_len"] == 2 and long["split"] == 1 and long["dropped"] == 1 and long["pieces"] > 2
    train = m["splits"]["train"]
    assert train["overflow"]["docs_split"] == 0 and m["counts"]["documents"] == long["pieces"] + 1
