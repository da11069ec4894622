"""Chat data as people export it: content as a list of parts, per-turn weights, JSON completions, and the columns
and keys smoldist does not read (listed with counts, or the record refused naming the key)."""

from __future__ import annotations

import io

import pytest

from smoldist.config import load_recipe
from smoldist.errors import DataError
from smoldist.store.build import prepare
from smoldist.store.preview import preview
from tests.helpers import recipe_dict, write_jsonl, write_recipe


def recipe(tmp_path, sources, **data):
    return load_recipe(write_recipe(tmp_path, recipe_dict(tmp_path, sources, data=data)))


def shown(tmp_path, records, **source):
    f = write_jsonl(tmp_path / "d.jsonl", records)
    r = recipe(tmp_path, [{"path": str(f), **source}])
    buf = io.StringIO()
    preview(r.model, r.data, n=50, color=False, out=buf)
    return buf.getvalue()


def counts(tmp_path, records, **source):
    f = write_jsonl(tmp_path / "d.jsonl", records)
    r = recipe(tmp_path, [{"path": str(f), **source}])
    return prepare(r.model, r.data, verbose=False).manifest["counts"]["per_source"][0]


def parts(*texts):
    return [{"type": "text", "text": t} for t in texts]


def test_content_parts_are_joined_in_order(tmp_path):
    rec = {
        "messages": [{"role": "user", "content": parts("Hi ", "there")}, {"role": "assistant", "content": parts("Yo")}]
    }
    out = shown(tmp_path, [rec])
    assert "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n[[Yo<|im_end|>]]" in out


def test_a_non_text_part_makes_the_record_invalid(tmp_path):
    image = {"type": "image_url", "image_url": {"url": "http://x/cat.png"}}
    rec = {
        "messages": [
            {"role": "user", "content": [*parts("What is this?"), image]},
            {"role": "assistant", "content": "A cat."},
        ]
    }
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    per = counts(tmp_path, [rec, good])
    assert per["invalid"] == {"non_text_content": 1} and per["valid"] == 1
    assert "image_url" in per["first_invalid"][0]
    assert "non_text_content" in shown(tmp_path, [rec, good])


def test_a_json_completion_is_refused_with_the_serialize_hint(tmp_path):
    rec = {"prompt": "Give JSON", "completion": {"b": 1, "a": [1, 2]}}
    per = counts(tmp_path, [rec, {"prompt": "p", "completion": "c"}], format="prompt_completion")
    assert per["invalid"] == {"json_completion": 1}
    assert "serialize: json" in per["first_invalid"][0]


def test_serialize_json_writes_the_completion_with_its_keys_in_order(tmp_path):
    rec = {"prompt": "Give JSON", "completion": {"b": 1, "a": ["é", 2]}}
    out = shown(tmp_path, [rec], format="prompt_completion", serialize="json")
    assert '[[{"b": 1, "a": ["é", 2]}<|im_end|>]]' in out


def test_weight_zero_and_train_false_turns_carry_no_loss(tmp_path):
    rec = {
        "messages": [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "bad answer", "weight": 0},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "good answer", "weight": 1},
            {"role": "user", "content": "Q3"},
            {"role": "assistant", "content": "forced", "train": False},
            {"role": "user", "content": "Q4"},
            {"role": "assistant", "content": "kept", "train": True},
        ]
    }
    out = shown(tmp_path, [rec])
    assert "assistant\nbad answer<|im_end|>" in out and "[[bad answer" not in out
    assert "assistant\nforced<|im_end|>" in out and "[[forced" not in out
    assert "[[good answer<|im_end|>]]" in out and "[[kept<|im_end|>]]" in out
    assert "2 assistant turn(s) not trained (weight 0 / train: false)" in out


@pytest.mark.parametrize("key, value", [("weight", 0.5), ("weight", 2), ("train", "no"), ("train", 0)])
def test_other_weights_are_refused(tmp_path, key, value):
    rec = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", key: value}]}
    per = counts(
        tmp_path, [rec, {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    )
    assert per["invalid"] == {"bad_weight": 1} and key in per["first_invalid"][0]


def test_a_null_weight_is_absent(tmp_path):
    """Datasets saved as Arrow fill a key missing from some messages with null: it means absent."""
    rec = {
        "messages": [
            {"role": "user", "content": "q", "weight": None},
            {"role": "assistant", "content": "a", "weight": None},
        ]
    }
    assert counts(tmp_path, [rec])["valid"] == 1


def test_all_turns_weight_zero_is_no_assistant_turn(tmp_path):
    rec = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert counts(tmp_path, [rec, good])["invalid"] == {"no_assistant_turn": 1}


def test_ignored_columns_are_listed_with_counts(tmp_path):
    recs = [
        {
            "id": i,
            "source": "x",
            "messages": [{"role": "user", "content": "q", "ts": 1}, {"role": "assistant", "content": "a"}],
        }
        for i in range(3)
    ]
    per = counts(tmp_path, recs)
    assert per["valid"] == 3 and per["ignored"] == {"id": 3, "source": 3, "messages[].ts": 3}
    out = shown(tmp_path, recs)
    assert "ignored: id in 3 records, source in 3 records, messages[].ts in 3 records" in out


@pytest.mark.parametrize("key", ["reasoning_content", "function_call"])
def test_keys_that_change_a_turn_are_refused_naming_the_key(tmp_path, key):
    rec = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", key: "think"}]}
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    per = counts(tmp_path, [rec, good])
    assert per["invalid"] == {"unsupported_key": 1} and key in per["first_invalid"][0]


def test_error_mode_names_the_key(tmp_path):
    rec = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 3}]}
    f = write_jsonl(tmp_path / "d.jsonl", [rec])
    r = recipe(tmp_path, [{"path": str(f)}], on_invalid="error")
    with pytest.raises(DataError, match=r"d.jsonl:1: invalid record \(bad_weight\): message 1 has weight 3"):
        prepare(r.model, r.data, verbose=False)
