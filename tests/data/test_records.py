"""Records are parsed and converted in the workers; counts, max_samples and on_invalid: error stay in source order.

Tiny batches (3 records) put many batches in flight at once, so a worker may finish a later batch
before an earlier one: the store and its counts must still be exactly those of one process.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

import smoldist.data.records as records
from smoldist.config import load_recipe
from smoldist.errors import DataError
from smoldist.store.build import prepare
from tests.helpers import recipe_dict, write_jsonl, write_recipe


def chat(i: int) -> dict:
    return {
        "messages": [{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": f"answer {i}."}]
    }


def messy_sources(tmp_path) -> list[dict]:
    lines = [chat(i) for i in range(40)]
    lines[4] = '{"messages": [oops'  # line 5: bad JSON
    lines[11] = {"messages": [{"role": "user", "content": "no answer"}]}  # line 12: no assistant turn
    lines[30] = {"msgs": []}  # line 31: missing field
    text = "".join(
        (r if isinstance(r, str) else json.dumps(r)) + "\n" + ("\n" if i == 20 else "") for i, r in enumerate(lines)
    )
    (tmp_path / "messy.jsonl").write_text(text)  # a blank line after the 21st record: line numbers shift by one
    write_jsonl(tmp_path / "capped.jsonl", [chat(100 + i) if i != 2 else {"messages": []} for i in range(30)])
    (tmp_path / "list.json").write_text(json.dumps([chat(200 + i) for i in range(20)]))
    return [
        {"path": str(tmp_path / "messy.jsonl")},
        {"path": str(tmp_path / "capped.jsonl"), "max_samples": 7},
        {"path": str(tmp_path / "list.json"), "fraction": 0.5},
    ]


def build(tmp_path, name: str, num_proc: int, **data):
    sources = messy_sources(tmp_path)
    raw = recipe_dict(tmp_path, sources, data={"num_proc": num_proc, "store": str(tmp_path / name), **data})
    r = load_recipe(write_recipe(tmp_path, raw, f"{name}.yaml"))
    return prepare(r.model, r.data, verbose=False)


def rows(result) -> list:
    out = []
    for f in sorted((result.path / "train").glob("*.arrow")):
        with pa.memory_map(str(f)) as src:
            out += pa.ipc.open_stream(src).read_all().column("input_ids").to_pylist()
    return out


def test_workers_give_the_store_and_counts_of_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "BATCH", 3)
    one, two = build(tmp_path, "one", 1), build(tmp_path, "two", 2)
    assert one.manifest["num_proc"] == 1 and two.manifest["num_proc"] == 2
    assert one.manifest["counts"] == two.manifest["counts"]
    assert rows(one) == rows(two) and len(rows(one)) > 0
    per = two.manifest["counts"]["per_source"]
    assert per[0]["read"] == 40 and per[0]["valid"] == 37
    assert per[0]["invalid"] == {"bad_json": 1, "no_assistant_turn": 1, "missing_field": 1}
    assert [x.split("messy.jsonl:")[1].split(":")[0] for x in per[0]["first_invalid"]] == ["5", "12", "32"]
    # max_samples 7 with an invalid third record: reading stops at the 8th record, later batches in flight are not
    # counted
    assert (per[1]["read"], per[1]["valid"], per[1]["documents"], per[1]["invalid"]) == (
        8,
        7,
        7,
        {"empty_conversation": 1},
    )
    assert per[2]["read"] == 20 and per[2]["valid"] + per[2]["not_selected"] == 20 and 0 < per[2]["valid"] < 20
    assert [r["documents"] for r in per] == [37, 7, per[2]["valid"]]


def test_error_mode_with_workers_names_the_first_bad_record(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "BATCH", 3)
    with pytest.raises(DataError) as e:
        build(tmp_path, "err", 2, on_invalid="error")
    assert "messy.jsonl:5: invalid record (bad_json)" in str(e.value) and "data.sources.0" in str(e.value)


def test_a_bad_record_after_max_samples_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "BATCH", 2)
    write_jsonl(tmp_path / "a.jsonl", [chat(i) for i in range(5)] + ["not json"] * 5)
    raw = recipe_dict(
        tmp_path, [{"path": str(tmp_path / "a.jsonl"), "max_samples": 5}], data={"num_proc": 2, "on_invalid": "error"}
    )
    r = load_recipe(write_recipe(tmp_path, raw))
    m = prepare(r.model, r.data, verbose=False).manifest
    assert m["counts"]["per_source"][0]["read"] == 5 and m["counts"]["documents"] == 5


def test_head_keeps_the_first_documents():
    from smoldist.data.encode import EncodedBatch

    b = EncodedBatch(np.arange(10, dtype=np.int32), -np.arange(10, dtype=np.int32), np.array([3, 3, 4]))
    h = b.head(2)
    assert h.ids.tolist() == list(range(6)) and h.lengths.tolist() == [3, 3]
    assert b.head(3) is b
