"""Preference pairs: TRL's formats read, rendered with the recipe's template, completions scored through the end of
turn, invalid pairs counted by reason, over-long pairs truncated from the prompt's start or dropped, and counted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smoldist.config import load_recipe
from smoldist.data.pair_packing import pack_pairs
from smoldist.errors import RecipeError
from smoldist.store.build import prepare
from smoldist.store.manifest import load_split
from tests.helpers import recipe_dict, write_jsonl, write_recipe

PAIRS = [
    {"prompt": "What is 2 plus 3?", "chosen": "5.", "rejected": "6."},
    {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    },
    {  # implicit prompt (ultrafeedback's shape: a string prompt beside whole conversations), an extra field
        "prompt": "Sky?",
        "chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Green."}],
        "score": 7,
    },
]
BAD = [
    {"prompt": "x", "chosen": "same", "rejected": "same"},
    {"prompt": "x", "chosen": " ", "rejected": "no"},
    {"chosen": "a", "rejected": "b"},
]


def dpo_recipe(tmp_path, records, **data):
    path = write_jsonl(tmp_path / "pairs.jsonl", records)
    raw = recipe_dict(tmp_path, [{"path": str(path), "format": "preference"}], data={"overflow": "truncate", **data})
    raw["method"] = "dpo"
    return load_recipe(write_recipe(tmp_path, raw))


def decoded_rows(store):
    from tokenizers import Tokenizer

    from smoldist.config.recipe import resolve_path

    tok = Tokenizer.from_file(resolve_path("pkg:demo/tokenizer/tokenizer.json"))
    out = []
    for row in load_split(store, "train"):
        at = 0
        for n, pair in zip(row["seq_lengths"], row["pair_ids"]):
            ids, labels = row["input_ids"][at : at + n], row["labels"][at : at + n]
            scored = [t for t in labels if t != -100]
            out.append(
                (pair, tok.decode(ids, skip_special_tokens=False), tok.decode(scored, skip_special_tokens=False))
            )
            at += n
    return out


def test_formats_render_and_score_the_completions_only(tmp_path):
    result = prepare(*(lambda r: (r.model, r.data))(dpo_recipe(tmp_path, PAIRS + BAD)), verbose=False)
    counts = result.manifest["counts"]
    assert counts["records_valid"] == 3
    assert counts["invalid_by_reason"] == {"identical_pair": 1, "empty_completion": 1, "missing_field": 1}
    seen = {pair: [] for pair in range(3)}
    for pair, text, scored in decoded_rows(result.path):
        seen[pair].append((text, scored))
    for chosen, rejected in seen.values():  # chosen then rejected, in the same row, same prompt
        assert chosen[0].endswith(chosen[1]) and rejected[0].endswith(rejected[1])
        assert chosen[1].endswith("<|im_end|>") and rejected[1].endswith("<|im_end|>")
        assert chosen[0][: -len(chosen[1])] == rejected[0][: -len(rejected[1])]
    assert [s for _, s in seen[0]] == ["5.<|im_end|>", "6.<|im_end|>"]
    assert [s for _, s in seen[2]] == ["Blue.<|im_end|>", "Green.<|im_end|>"]
    assert seen[2][0][0].count("Sky?") == 1  # the implicit prompt is rendered once, not as a second user turn
    split = result.manifest["splits"]["train"]
    assert split["pairs"] == 3 and split["pairs_per_row"] == pytest.approx(3 / split["rows"])


@pytest.mark.parametrize("overflow", ["truncate", "drop"])
def test_long_pairs_are_cut_from_the_prompt_start_or_dropped_and_counted(tmp_path, overflow):
    long = {"prompt": "long " * 100, "chosen": "a", "rejected": "b"}
    result = prepare(*(lambda r: (r.model, r.data))(dpo_recipe(tmp_path, [*PAIRS, long], overflow=overflow)), False)
    o = result.manifest["splits"]["train"]["overflow"]
    assert o["pairs_over_seq_len"] == 1 and o["tokens_lost"] > 0
    kept = {pair for pair, _, _ in decoded_rows(result.path)}
    if overflow == "drop":
        assert o["pairs_dropped"] == 1 and kept == {0, 1, 2}
    else:
        assert o["pairs_truncated"] == 1 and 3 in kept
        texts = [(t, s) for p, t, s in decoded_rows(result.path) if p == 3]
        assert [s for _, s in texts] == ["a<|im_end|>", "b<|im_end|>"]  # the completion is whole, the prompt cut


def test_pair_packing_keeps_pairs_whole():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=400)
    prompt_lens = np.minimum(lengths[0::2], lengths[1::2]) // 2 + 1
    packed, seg_pairs, stats = pack_pairs(lengths, prompt_lens, 256, "truncate")
    for row in packed.rows:
        assert sum(int(packed.segments.length[s]) for s in row) <= 256
        assert [seg_pairs[s] for s in row[0::2]] == [seg_pairs[s] for s in row[1::2]]  # chosen, rejected, ...
    assert len(seg_pairs) // 2 + stats.pairs_dropped == 200


def test_method_keys_and_refusals(tmp_path):
    sft = recipe_dict(tmp_path, [{"path": "x.jsonl"}])
    assert load_recipe(write_recipe(tmp_path, sft)).method == "sft"
    assert "method" not in load_recipe(write_recipe(tmp_path, sft)).to_dict()  # SFT recipes write what they wrote
    bad = [
        ({"method": "ppo"}, "method: 'ppo' is not one of sft, dpo"),
        ({"data": {"sources": [{"path": "x.jsonl", "format": "preference"}]}}, "train with method: dpo"),
        ({"method": "dpo"}, "method dpo reads format: preference sources only"),
        ({"method": "dpo", "data": {"sources": [{"path": "x", "format": "preference"}]}}, "data.overflow: 'split'"),
    ]
    evaluating = json.loads(json.dumps(sft))  # evaluation during a DPO run is taken (tests/train/test_dpo_run.py)
    evaluating.update(method="dpo")
    evaluating["data"].update(sources=[{"path": "x", "format": "preference"}], overflow="drop", eval_fraction=0.1)
    evaluating["train"].update(eval_strategy="steps")
    assert load_recipe(write_recipe(tmp_path, evaluating)).train["eval_strategy"] == "steps"
    for change, message in bad:
        raw = json.loads(json.dumps(sft))
        for key, value in change.items():
            if isinstance(value, dict):
                raw[key].update(value)
            else:
                raw[key] = value
        with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
            load_recipe(write_recipe(tmp_path, raw))


def test_sft_and_dpo_stores_of_the_same_file_never_collide(tmp_path):
    from smoldist.store.plan import plan_store

    r = dpo_recipe(tmp_path, PAIRS)
    sft = load_recipe(
        write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(tmp_path / "pairs.jsonl"), "format": "messages"}]))
    )
    assert plan_store(r.model, r.data).key != plan_store(sft.model, sft.data).key


def test_preview_shows_a_pair_as_its_two_sequences(tmp_path):
    import io

    from smoldist.store.preview import preview

    r = dpo_recipe(tmp_path, PAIRS)
    out = io.StringIO()
    shown = preview(r.model, r.data, n=1, color=False, out=out)
    text = out.getvalue()
    assert len(shown) == 2 and "pair 0 chosen" in text and "pair 0 rejected" in text
    assert "[[5.<|im_end|>]]" in text and "[[6.<|im_end|>]]" in text


def test_preference_turns_are_read_as_conversation_turns_are(tmp_path):
    """Content parts are joined, keys that change a turn are refused by name, weights and tool calls are refused:
    a completion never loses a field silently."""
    from smoldist.config.recipe import SourceConfig
    from smoldist.data.converters import InvalidRecord
    from smoldist.data.preference import convert_preference

    spec = SourceConfig(path="x", format="preference")
    prompt = [{"role": "user", "content": "2+2?"}]
    parts = [{"type": "text", "text": "4"}, {"type": "text", "text": "."}]
    pair = convert_preference(
        {"prompt": prompt, "chosen": [{"role": "assistant", "content": parts, "id": 1}], "rejected": "5."},
        spec,
        "assistant",
    )
    assert pair.chosen == [{"role": "assistant", "content": "4."}] and pair.ignored == ("chosen[].id",)
    for turn, reason in [
        ({"role": "assistant", "content": "4", "reasoning_content": "..."}, "unsupported_key"),
        ({"role": "assistant", "content": "4", "weight": 0}, "bad_weight"),
        ({"role": "assistant", "content": [{"type": "image", "image": "x"}]}, "non_text_content"),
    ]:
        with pytest.raises(InvalidRecord) as e:
            convert_preference({"prompt": prompt, "chosen": [turn], "rejected": "5."}, spec, "assistant")
        assert e.value.reason == reason


TOOL_SCHEMA = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


def test_a_records_tools_are_refused_not_ignored(tmp_path):
    """`tools` changes what the model sees (the template renders the schemas): a pair holding them is invalid,
    counted by reason, and `on_invalid: error` names the record; an empty or null `tools` is no tools."""
    from smoldist.errors import DataError

    records = [*PAIRS, {**PAIRS[0], "tools": TOOL_SCHEMA}, {**PAIRS[1], "tools": None}, {**PAIRS[0], "tools": []}]
    result = prepare(*(lambda r: (r.model, r.data))(dpo_recipe(tmp_path, records)), verbose=False)
    counts = result.manifest["counts"]
    assert counts["records_valid"] == 5 and counts["invalid_by_reason"] == {"unsupported_key": 1}
    (source,) = counts["per_source"]
    assert "tools" not in source["ignored"] and "'tools'" in source["first_invalid"][0]
    r = dpo_recipe(tmp_path, records, on_invalid="error")
    with pytest.raises(DataError, match=r"pairs\.jsonl:4: invalid record \(unsupported_key\): field 'tools'"):
        prepare(r.model, r.data, force=True, verbose=False)  # on_invalid is not in the key: build again


def test_a_sources_role_and_content_keys_are_read_as_for_messages(tmp_path):
    """`role_field`/`content_field` name a turn's keys for a preference source as for a messages one, never lost."""
    turn = lambda role, text: {"speaker": role, "text": text}  # noqa: E731
    record = {
        "prompt": [turn("system", "Be terse."), turn("user", "2+2?")],
        "chosen": [turn("assistant", "4")],
        "rejected": [turn("assistant", "5")],
    }
    r = dpo_recipe(tmp_path, [record])
    r.data.sources[0].role_field, r.data.sources[0].content_field = "speaker", "text"
    result = prepare(r.model, r.data, verbose=False)
    assert result.manifest["counts"]["records_valid"] == 1
    (row,) = decoded_rows(result.path)[:1]
    assert (
        row[1].startswith("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n2+2?") and row[2] == "4<|im_end|>"
    )


def test_pair_packing_swaps_one_pair_for_two_to_close_gaps():
    """Pairs are long next to a row: BFD and one-for-one swaps leave 5 rows here, where 4 hold them (the bound)."""
    pair_len = np.array([30, 57, 66, 24, 50, 25, 36, 32, 44, 25])
    lengths = np.stack([pair_len // 2, pair_len - pair_len // 2], axis=1).reshape(-1)
    packed, seg_pairs, _ = pack_pairs(lengths, np.ones(len(pair_len), dtype=np.int64), 100, "truncate")
    assert len(packed.rows) == -(-int(pair_len.sum()) // 100) == 4
    for row in packed.rows:
        assert sum(int(packed.segments.length[s]) for s in row) <= 100
        assert [seg_pairs[s] for s in row[0::2]] == [seg_pairs[s] for s in row[1::2]]
    assert sorted(seg_pairs[s] for row in packed.rows for s in row[0::2]) == list(range(10))
