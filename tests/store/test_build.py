"""The prepared store: documents equal the rendered conversations, labels are exactly the assistant turns,
the key is content-addressed, and a damaged store is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smoldist.config import load_recipe
from smoldist.data.templates import recipe_template
from smoldist.errors import DataError, StoreError
from smoldist.model.build import load_tokenizer as load_tokenizer
from smoldist.store.build import prepare
from smoldist.store.manifest import load_split
from tests.helpers import CONVERSATIONS, recipe_dict, write_jsonl, write_recipe


def documents(ds):
    """Split packed rows back into (input_ids, labels) per document using seq_lengths."""
    for row in ds:
        start = 0
        for n in row["seq_lengths"]:
            yield row["input_ids"][start : start + n], row["labels"][start : start + n]
            start += n


def test_store_documents_equal_apply_chat_template(tiny_recipe):
    r = load_recipe(tiny_recipe)
    result = prepare(r.model, r.data, verbose=False)
    tok = load_tokenizer(r.model)
    template = recipe_template(r.model, r.data)
    expected = []
    for conv in CONVERSATIONS * 5:
        enc = tok.apply_chat_template(
            conv["messages"], chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        mask = list(enc["assistant_masks"])
        mask[0] = 0  # the first token of a document is never a target
        expected.append((list(enc["input_ids"]), [t if m else -100 for t, m in zip(enc["input_ids"], mask)]))
    got = [(list(i), list(lab)) for i, lab in documents(load_split(result.path, "train"))]
    assert sorted(got) == sorted(expected)


def test_labels_decode_to_exactly_the_assistant_turns(tiny_recipe):
    r = load_recipe(tiny_recipe)
    result = prepare(r.model, r.data, verbose=False)
    tok = load_tokenizer(r.model)
    want = sorted(
        "".join(m["content"] + "<|im_end|>" for m in c["messages"] if m["role"] == "assistant")
        for c in CONVERSATIONS * 5
    )
    got = sorted(
        tok.decode([t for t, lab in zip(ids, labels) if lab != -100])
        for ids, labels in documents(load_split(result.path, "train"))
    )
    assert got == want


def test_rows_respect_seq_len_and_manifest_counts(tiny_recipe):
    r = load_recipe(tiny_recipe, ["data.seq_len=64"])
    result = prepare(r.model, r.data, verbose=False)
    ds = load_split(result.path, "train")
    lengths = [len(x) for x in ds["input_ids"]]
    assert max(lengths) <= 64
    assert all(sum(s) == len(i) == len(lab) for s, i, lab in zip(ds["seq_lengths"], ds["input_ids"], ds["labels"]))
    split = result.manifest["splits"]["train"]
    assert split["rows"] == len(ds) and split["tokens"] == sum(lengths)
    assert split["trained_tokens"] == int((np.concatenate([np.array(x) for x in ds["labels"]]) != -100).sum())
    assert result.manifest["counts"]["records_valid"] == len(CONVERSATIONS) * 5
    assert (result.path / "report.png").stat().st_size > 0 and (result.path / "report.json").is_file()


def test_same_recipe_reuses_and_token_inputs_change_the_key(tiny_recipe, tmp_path):
    r = load_recipe(tiny_recipe)
    first = prepare(r.model, r.data, verbose=False)
    assert not first.reused
    again = load_recipe(tiny_recipe, ["train.learning_rate=0.5", "data.num_proc=2", "data.num_shards=2"])
    assert prepare(again.model, again.data, verbose=False).path == first.path
    for override in [
        "data.seq_len=96",
        "data.packing=wrapped",
        "data.overflow=drop",
        "data.loss_on=all",
        "model.default_system_prompt=false",
        "data.eval_fraction=0.2",
    ]:
        changed = load_recipe(tiny_recipe, [override])
        assert prepare(changed.model, changed.data, verbose=False).path != first.path, override
    data_file = tmp_path / "chats.jsonl"
    data_file.write_text(data_file.read_text().replace("snow", "coal"))
    assert prepare(r.model, r.data, verbose=False).path != first.path


def test_damaged_store_is_refused(tiny_recipe):
    r = load_recipe(tiny_recipe)
    path = prepare(r.model, r.data, verbose=False).path
    shard = next((path / "train").glob("*.arrow"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="checksum mismatch"):
        prepare(r.model, r.data, verbose=False)
    shard.write_bytes(data)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["inputs"]["seq_len"] = 4096
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="do not hash to its key"):
        prepare(r.model, r.data, verbose=False)
    assert prepare(r.model, r.data, force=True, verbose=False).reused is False


def test_no_temporary_store_left_after_a_failure(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "c.jsonl", CONVERSATIONS)
    r = load_recipe(write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(src)}])))
    from smoldist.store.writer import StoreWriter

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreWriter, "write_split", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(r.model, r.data, verbose=False)
    left = [p.name for p in (tmp_path / "store").iterdir()]
    assert left in ([], [".cache"]), left  # at most the sha256 cache (a source older than SETTLE_S): no partial store


def test_missing_source_fails_before_work(tmp_path):
    r = load_recipe(write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(tmp_path / "nope.jsonl")}])))
    with pytest.raises(DataError, match=r"data.sources.0.path: no file matches .*nope.jsonl"):
        prepare(r.model, r.data, verbose=False)
    assert not (tmp_path / "store").exists()


def test_rows_written_in_many_chunks_equal_one_chunk_and_leave_no_scratch(tiny_recipe, monkeypatch):
    import smoldist.store.writer as rows

    r = load_recipe(tiny_recipe, ["data.seq_len=64"])
    whole = prepare(r.model, r.data, verbose=False)
    expected = load_split(whole.path, "train").to_dict()
    monkeypatch.setattr(rows, "CHUNK_TOKENS", 150)  # 2 rows a chunk
    again = prepare(r.model, r.data, force=True, verbose=False)
    assert again.path == whole.path and load_split(again.path, "train").to_dict() == expected
    assert sorted(p.name for p in again.path.iterdir()) == ["manifest.json", "report.json", "report.png", "train"]
    untimed = lambda m: {k: {f: v for f, v in split.items() if f != "pack_seconds"} for k, split in m["splits"].items()}  # noqa: E731
    assert untimed(again.manifest) == untimed(whole.manifest)


def test_rows_written_into_several_shards_load_as_one_dataset_in_order(tiny_recipe, monkeypatch):
    import smoldist.store.writer as rows

    r = load_recipe(tiny_recipe, ["data.seq_len=64"])
    expected = load_split(prepare(r.model, r.data, verbose=False).path, "train").to_dict()
    monkeypatch.setattr(rows, "CHUNK_TOKENS", 150)
    many = load_recipe(tiny_recipe, ["data.seq_len=64", "data.num_shards=3"])
    again = prepare(many.model, many.data, force=True, verbose=False)
    assert len(list((again.path / "train").glob("*.arrow"))) == 3 == again.manifest["splits"]["train"]["shards"]
    assert load_split(again.path, "train").to_dict() == expected


def test_a_source_read_in_the_wrong_format_says_which_fields_it_needs_and_has(tiny_recipe, capsys):
    """Overriding a source's path keeps the recipe's format: a chat JSONL read as gsm8k names both sides."""
    from smoldist.store.preview import preview

    r = load_recipe(tiny_recipe, ["data.sources.0.format=gsm8k"])
    want = (
        "data.sources.0: format 'gsm8k' needs fields question, answer; the records have fields: messages "
        "(format 'messages' reads them: data.sources.0.format=messages)"
    )
    with pytest.raises(DataError) as e:
        prepare(r.model, r.data, verbose=False)
    assert want in str(e.value)
    with pytest.raises(DataError, match="preview: no valid records"):  # and says why, above
        preview(r.model, r.data, n=1)
    assert want in capsys.readouterr().out
