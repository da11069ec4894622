"""One JSONL reader: the records prepare converts and the records eval reads name the same lines."""

from __future__ import annotations

import pytest

from smoldist.config import SourceConfig, load_recipe
from smoldist.data.records import SourceCounts, read_batches
from smoldist.data.sources import Unreadable, iter_jsonl, jsonl_lines, parse_line, resolve_source
from smoldist.errors import DataError
from smoldist.store.plan import plan_store

# a byte-order mark, blank and whitespace-only lines, a line that is not UTF-8, one that is not JSON
RAW = b'\xef\xbb\xbf{"a": 1}\n\n   \n{"a": 2}\n\xff\xfe\n{bad\n{"a": 3}'


def test_blank_lines_are_skipped_but_still_counted_in_line_numbers(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(RAW)
    assert [n for n, _ in jsonl_lines(str(path))] == [1, 4, 5, 6, 7]


def test_prepare_batches_and_the_plain_reader_agree_line_for_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(RAW)
    plain = list(iter_jsonl(str(path)))  # eval's reader (eval/gsm8k.py reads through it)
    src = resolve_source(SourceConfig(path=str(path)), "data.sources.0")
    batches = list(read_batches([src], [SourceCounts()], batch_size=2))  # prepare's: bytes, parsed in the workers
    batched = [(b.position(i), parse_line(raw)) for b in batches for i, raw in enumerate(b.records)]
    assert batched == plain
    assert [pos for pos, _ in plain] == [f"{path}:{n}" for n in (1, 4, 5, 6, 7)]
    records = [rec for _, rec in plain]
    assert records[0] == {"a": 1} and records[1] == {"a": 2} and records[4] == {"a": 3}
    assert isinstance(records[2], Unreadable) and records[2].reason == "not_utf8"
    assert isinstance(records[3], Unreadable) and records[3].reason == "bad_json"


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.sources.0.split=test", "split"),
        ("data.sources.0.name=main", "name"),
        ("data.sources.0.data_dir=data/python", "data_dir"),
        ("data.sources.0.revision=v1", "revision"),
    ],
)
def test_a_hub_option_on_a_local_file_is_refused_before_any_work(tiny_recipe, override, key):
    """A local JSONL has no splits, configs, sub-directories or revisions: `split: test` on it would train on the
    whole file as if it were the test split. Refused in one line when the sources are resolved."""
    recipe = load_recipe(tiny_recipe, [override])
    with pytest.raises(DataError) as e:
        plan_store(recipe.model, recipe.data)
    assert f"data.sources.0.{key}: " in str(e.value) and "a local file" in str(e.value)
