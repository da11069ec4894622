"""Paths in a recipe: relative data paths are read from the recipe file's folder (not the current directory),
`pkg:` paths from the package, hub ids stay hub ids, and paths given on the command line are the shell's."""

from __future__ import annotations

import pytest

from smoldist.config import load_recipe
from smoldist.config.recipe import PACKAGE_DIR
from tests.helpers import recipe_dict, write_jsonl, write_recipe


@pytest.fixture
def recipe_elsewhere(tmp_path, monkeypatch):
    """A recipe in project/ that names data/chats.jsonl and my.jinja relative to itself; the shell is in work/."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    write_jsonl(project / "data" / "chats.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    raw = recipe_dict(
        tmp_path,
        [
            {"path": "data/chats.jsonl"},
            {"path": "HuggingFaceTB/smoltalk", "name": "all"},
            {"path": "pkg:demo/conversations.jsonl"},
        ],
    )
    raw["model"]["chat_template"] = "my.jinja"
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return write_recipe(project, raw)


def test_relative_data_paths_are_read_from_the_recipes_folder(recipe_elsewhere, tmp_path):
    r = load_recipe(recipe_elsewhere)
    own, hub, pkg = (s.path for s in r.data.sources)
    assert own == str(tmp_path / "project" / "data" / "chats.jsonl")
    assert hub == "HuggingFaceTB/smoltalk" and pkg == "pkg:demo/conversations.jsonl"
    assert r.model.chat_template == str(tmp_path / "project" / "my.jinja")
    assert r.model.tokenizer == "pkg:demo/tokenizer"


def test_a_template_name_stays_a_name_beside_a_folder_of_that_name(recipe_elsewhere, tmp_path):
    for folder in ("project", "work"):  # beside the recipe, and where the command runs
        (tmp_path / folder / "tokenizer").mkdir()
        (tmp_path / folder / "smollm2").mkdir()
    for name in ("tokenizer", "smollm2"):
        assert load_recipe(recipe_elsewhere, [f"model.chat_template={name}"]).model.chat_template == name


def test_a_path_given_on_the_command_line_is_the_shells(recipe_elsewhere, tmp_path):
    r = load_recipe(recipe_elsewhere, ["data.sources.0.path=mine.jsonl"])
    assert r.data.sources[0].path == str(tmp_path / "work" / "mine.jsonl")


def test_a_missing_relative_file_is_named_where_it_was_looked_for(recipe_elsewhere, tmp_path):
    from smoldist.data.sources import resolve_source
    from smoldist.errors import DataError

    r = load_recipe(recipe_elsewhere, [])
    (tmp_path / "project" / "data" / "chats.jsonl").unlink()
    with pytest.raises(DataError, match=str(tmp_path / "project" / "data" / "chats.jsonl")):
        resolve_source(r.data.sources[0], "data.sources.0")


def test_a_recipe_can_be_named_inside_the_package():
    r = load_recipe("pkg:share/launch/smollm2-135m/gsm8k.yaml")
    assert r.name == "smollm2-135m-gsm8k" and r.data.sources[0].path == "openai/gsm8k"
    assert (PACKAGE_DIR / "share" / "launch" / "smollm2-135m" / "gsm8k.yaml").is_file()
