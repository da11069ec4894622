"""`smoldist preview` numbers records by their line in the file, and fails when no record is valid."""

from __future__ import annotations

import io

from smoldist.cli import main
from smoldist.config import load_recipe
from smoldist.store.preview import preview
from tests.helpers import CONVERSATIONS, recipe_dict, write_jsonl, write_recipe

BAD = {"messages": [{"role": "user", "content": "no answer"}]}


def test_records_are_numbered_by_their_file_line(tmp_path):
    f = write_jsonl(tmp_path / "mixed.jsonl", [BAD, "not json", CONVERSATIONS[0], BAD, CONVERSATIONS[1]])
    r = load_recipe(write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(f)}])))
    out = io.StringIO()
    assert len(preview(r.model, r.data, n=2, color=False, out=out)) == 2
    text = out.getvalue()
    assert f"{f}:3 (source 0)" in text and f"{f}:5 (source 0)" in text, text  # before: "record 0", "record 1"


def test_no_valid_record_is_a_failure(tmp_path, capsys):
    f = write_jsonl(tmp_path / "bad.jsonl", [BAD, "not json"])
    recipe = write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(f)}]))
    assert main(["preview", str(recipe)]) == 2  # before: 0, after printing "no valid records to preview"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "preview: no valid records in the first 2 read" in err[0], err
