"""Every converter on small files in its real format, every invalid reason counted (skip) or named (error)."""

from __future__ import annotations

import json

import pytest

from smoldist.config import load_recipe
from smoldist.errors import DataError
from smoldist.store.build import prepare
from smoldist.store.preview import preview
from tests.helpers import recipe_dict, write_jsonl, write_recipe

GSM8K = [{"question": "Ann has 3 cats and gets 2 more. How many cats?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"}]


def conversations_of(tmp_path, source: dict, **data) -> list[str]:
    """Prepare one source and return the decoded documents through `preview` (plain markers)."""
    import io

    r = load_recipe(write_recipe(tmp_path, recipe_dict(tmp_path, [source], data=data)))
    buf = io.StringIO()
    shown = preview(r.model, r.data, n=50, color=False, out=buf)
    return buf.getvalue(), shown, r


def test_messages_with_custom_field_names(tmp_path):
    f = write_jsonl(
        tmp_path / "m.jsonl", [{"turns": [{"speaker": "user", "text": "Hi"}, {"speaker": "assistant", "text": "Yo"}]}]
    )
    out, shown, _ = conversations_of(
        tmp_path, {"path": str(f), "messages_field": "turns", "role_field": "speaker", "content_field": "text"}
    )
    assert "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n[[Yo<|im_end|>]]" in out and len(shown) == 1


def test_gsm8k_keeps_the_answer_as_written(tmp_path):
    f = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K)
    out, _, _ = conversations_of(tmp_path, {"path": str(f), "format": "gsm8k"})
    assert "<|im_start|>user\nAnn has 3 cats and gets 2 more. How many cats?<|im_end|>" in out
    assert "[[3 + 2 = <<3+2=5>>5\n#### 5<|im_end|>]]" in out


def test_sharegpt_json_file(tmp_path):
    f = tmp_path / "share.json"
    f.write_text(
        json.dumps(
            [
                {
                    "conversations": [
                        {"from": "system", "value": "Be brief."},
                        {"from": "human", "value": "Q?"},
                        {"from": "gpt", "value": "A."},
                    ]
                }
            ]
        )
    )
    out, _, _ = conversations_of(tmp_path, {"path": str(f), "format": "sharegpt"})
    assert out.count("<|im_start|>system\nBe brief.<|im_end|>") == 1 and "SmolLM" not in out
    assert "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n[[A.<|im_end|>]]" in out


def test_prompt_completion_parquet_with_system_prompt(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "pc.parquet"
    pq.write_table(pa.table({"prompt": ["2+2?"], "completion": ["4"]}), f)
    out, _, _ = conversations_of(tmp_path, {"path": str(f), "format": "prompt_completion", "system_prompt": "Math."})
    assert (
        "<|im_start|>system\nMath.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n[[4<|im_end|>]]"
        in out
    )


def test_columns_with_instruction_prefix(tmp_path):
    f = write_jsonl(tmp_path / "code.jsonl", [{"content": "print(1)", "desc": "prints one"}])
    out, _, _ = conversations_of(
        tmp_path,
        {
            "path": str(f),
            "format": "columns",
            "columns": {"user": "desc", "assistant": "content"},
            "prefix": "Write a Python file: ",
        },
    )
    assert (
        "<|im_start|>user\nWrite a Python file: prints one<|im_end|>\n<|im_start|>assistant\n[[print(1)<|im_end|>]]"
        in out
    )


def test_text_documents_train_every_token_and_end_with_eos(tmp_path):
    f = write_jsonl(tmp_path / "stack.jsonl", [{"content": "def f():\n    return 1\n"}])
    out, shown, _ = conversations_of(
        tmp_path, {"path": str(f), "format": "text", "text_field": "content"}, loss_on="all"
    )
    assert "<|im_start|>" not in out and out.rstrip().endswith("<|im_end|>]]")  # the demo tokenizer's EOS
    assert shown[0]["trained"] == shown[0]["tokens"] - 1  # all but the first token (nothing predicts it)


def test_saved_dataset_dir_glob_and_mixture(tmp_path):
    import datasets

    datasets.Dataset.from_list(GSM8K * 10).save_to_disk(str(tmp_path / "saved"))
    for i in range(3):
        write_jsonl(
            tmp_path / f"part-{i}.jsonl",
            [
                {"messages": [{"role": "user", "content": f"u{i}{j}"}, {"role": "assistant", "content": "a"}]}
                for j in range(10)
            ],
        )
    sources = [
        {"path": str(tmp_path / "saved"), "format": "gsm8k", "max_samples": 4},
        {"path": str(tmp_path / "part-*.jsonl"), "fraction": 0.5},
    ]
    r = load_recipe(write_recipe(tmp_path, recipe_dict(tmp_path, sources)))
    m = prepare(r.model, r.data, verbose=False).manifest
    per = m["counts"]["per_source"]
    assert per[0]["valid"] == 4 and per[0]["documents"] == 4
    assert per[1]["read"] == 30 and 5 <= per[1]["valid"] <= 25 and per[1]["valid"] + per[1]["not_selected"] == 30
    again = prepare(r.model, r.data, verbose=False).manifest  # the seeded selection is stable
    assert again["counts"]["per_source"][1]["valid"] == per[1]["valid"]


BAD = [
    ("bad_json", '{"messages": [oops'),
    ("not_a_record", "[1, 2]"),
    ("missing_field", {"msgs": []}),
    ("wrong_type", {"messages": "hello"}),
    ("empty_conversation", {"messages": []}),
    ("unknown_role", {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
    (
        "system_not_first",
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "y"},
            ]
        },
    ),
    ("content_not_string", {"messages": [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}]}),
    ("no_assistant_turn", {"messages": [{"role": "user", "content": "x"}]}),
]
GOOD = {"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "fine"}]}


def test_every_invalid_reason_is_counted_in_the_manifest(tmp_path):
    f = write_jsonl(tmp_path / "mixed.jsonl", [GOOD] + [rec for _, rec in BAD] + [GOOD])
    empty_text = write_jsonl(tmp_path / "texts.jsonl", [{"text": ""}, {"text": "real"}])
    sources = [{"path": str(f)}, {"path": str(empty_text), "format": "text"}]
    m = prepare(*_parts(tmp_path, sources), verbose=False).manifest
    per = m["counts"]["per_source"]
    assert per[0]["invalid"] == {reason: 1 for reason, _ in BAD}
    assert per[1]["invalid"] == {"empty_text": 1}
    assert per[0]["valid"] == 2 and per[0]["read"] == len(BAD) + 2
    assert m["counts"]["records_invalid"] == len(BAD) + 1
    assert per[0]["first_invalid"][0].endswith("mixed.jsonl:2: bad_json: bad JSON (Expecting value at column 15)")


@pytest.mark.parametrize("reason, record", BAD, ids=[r for r, _ in BAD])
def test_error_mode_names_file_line_and_reason(tmp_path, reason, record):
    f = write_jsonl(tmp_path / "one.jsonl", [GOOD, GOOD, record])
    with pytest.raises(DataError) as e:
        prepare(*_parts(tmp_path, [{"path": str(f)}], on_invalid="error"), verbose=False)
    assert f"one.jsonl:3: invalid record ({reason})" in str(e.value)
    assert not (tmp_path / "store").exists() or [p.name for p in (tmp_path / "store").iterdir()] in ([], [".cache"])


def test_nothing_valid_is_an_error(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"messages": []}])
    with pytest.raises(
        DataError, match=r"no valid records in any source; data.sources.0: 1 read, invalid \{'empty_conversation': 1\}"
    ):
        prepare(*_parts(tmp_path, [{"path": str(f)}]), verbose=False)


def test_preview_on_the_demo_recipe(capsys):
    import io

    r = load_recipe(None)
    buf = io.StringIO()
    shown = preview(r.model, r.data, n=4, color=True, out=buf)
    assert len(shown) == 4 and all(s["trained"] > 0 and not s["warnings"] for s in shown)
    assert "\x1b[" in buf.getvalue()  # coloured in a terminal
    plain = io.StringIO()
    preview(r.model, r.data, n=1, color=False, out=plain)
    assert "[[" in plain.getvalue() and "\x1b[" not in plain.getvalue()


def test_preview_warns_about_empty_trained_span_and_long_records(tmp_path):
    import io

    f = write_jsonl(
        tmp_path / "w.jsonl",
        [{"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "x"}]}],
    )
    r = load_recipe(write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(f)}])))
    shown = preview(r.model, r.data, n=1, color=False, out=io.StringIO())
    assert any("data.seq_len 128" in w for w in shown[0]["warnings"])
    from smoldist.store.preview import warnings_for

    assert warnings_for(10, 0, r.data) == ["no token of this record is trained (empty trained span)"]


def _parts(tmp_path, sources, **data):
    r = load_recipe(write_recipe(tmp_path, recipe_dict(tmp_path, sources, data=data)))
    return r.model, r.data


def test_a_line_that_is_not_utf8_is_one_invalid_record_not_a_crash(tmp_path):
    good = json.dumps(GOOD).encode()
    latin1 = json.dumps(
        {"messages": [{"role": "user", "content": "café"}, {"role": "assistant", "content": "ok"}]}, ensure_ascii=False
    ).encode("latin-1")  # é as the single byte 0xe9
    f = tmp_path / "mixed.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + latin1 + b"\n" + good + b"\n")  # with a byte-order mark on line 1
    m = prepare(*_parts(tmp_path, [{"path": str(f)}]), verbose=False).manifest
    per = m["counts"]["per_source"][0]
    assert (per["read"], per["valid"], per["invalid"]) == (3, 2, {"not_utf8": 1})
    col = latin1.index(b"\xe9") + 1
    assert per["first_invalid"] == [f"{f}:2: not_utf8: not UTF-8 (byte 0xe9 at byte {col} of the line)"]
    with pytest.raises(DataError, match=r"mixed.jsonl:2: invalid record \(not_utf8\)"):
        prepare(*_parts(tmp_path, [{"path": str(f)}], on_invalid="error", store=str(tmp_path / "s2")), verbose=False)


def test_a_json_file_that_is_not_utf8_is_named(tmp_path):
    f = tmp_path / "list.json"
    f.write_bytes(b'[{"question": "caf\xe9?", "answer": "#### 1"}]')
    with pytest.raises(DataError, match=r"list.json: not UTF-8 \(byte 0xe9 at offset 18\)"):
        prepare(*_parts(tmp_path, [{"path": str(f)}]), verbose=False)
