"""The README works as written: in "Your own data": one sample line per format converts through that
format, and so do the tool-calling and content-parts records; the recipe template loads with its data read from
the recipe's folder, and the default system prompt it states is the one the template inserts; how to log in to
W&B; the install for a GPU machine and for `pip install` users, whose recipe names and `pkg:` paths exist in the
package; docs/ names nothing a user does not have."""

from __future__ import annotations

import json
import re

import yaml

from smoldist.config import SourceConfig, load_recipe
from smoldist.data.converters import CONVERTERS
from smoldist.data.templates import SMOLLM2_SYSTEM_PROMPT
from tests.helpers import REPO

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def test_each_format_has_a_sample_line_that_converts():
    text = section("Your own data")
    samples = re.findall(r"```yaml\n(- \{[^\n]*format: (\w+)[^\n]*)\n```\n```json\n([^\n]+)\n```", text)
    assert sorted(fmt for _, fmt, _ in samples) == sorted(CONVERTERS), samples
    for source, fmt, line in samples:
        spec = SourceConfig(**yaml.safe_load(source)[0])
        doc = CONVERTERS[fmt](json.loads(line), spec, "all" if fmt == "text" else "assistant")
        assert doc.text if fmt == "text" else doc.messages[-1]["role"] == "assistant", fmt


def test_the_tool_calling_and_parts_records_convert():
    records = [json.loads(x) for x in re.findall(r"```json\n([^\n]+)\n```", section("Your own data"))]
    tool = next(r for r in records if "tools" in r)
    parts = next(r for r in records if "messages" in r and isinstance(r["messages"][0]["content"], list))
    doc = CONVERTERS["messages"](tool, SourceConfig(path="x"), "assistant")
    assert doc.tools == tool["tools"] and [m["role"] for m in doc.messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    doc = CONVERTERS["messages"](parts, SourceConfig(path="x"), "assistant")
    assert doc.messages[0]["content"] == "Translate: good night" and doc.untrained == (1,)


def test_the_recipe_template_loads_with_data_beside_it(tmp_path, monkeypatch):
    (template,) = re.findall(r"```yaml\n(# my-recipe\.yaml\n.*?)```", section("Your own data"), re.S)
    (tmp_path / "project").mkdir()
    recipe = tmp_path / "project" / "my-recipe.yaml"
    recipe.write_text(template)
    monkeypatch.chdir(tmp_path)
    r = load_recipe(recipe)
    assert r.data.sources[0].path == str(tmp_path / "project" / "chats.jsonl")


def test_the_default_system_prompt_is_stated():
    assert f"`{SMOLLM2_SYSTEM_PROMPT}`" in section("Your own data")


def test_the_readme_says_how_to_log_in_to_wandb():
    text = section("Weights & Biases")
    assert "wandb login" in text and "WANDB_API_KEY" in text and "wandb sync" in text


def test_install_covers_a_gpu_machine_and_pip_users():
    text = section("Install")
    assert "**A GPU machine" in text and "**`pip install` users**" in text
    from smoldist.cluster.shipped import known_recipes
    from smoldist.config.recipe import resolve_path

    for name in re.findall(r"smoldist recipes --copy (\S+) ", text):
        assert name in known_recipes(), name
    for path in re.findall(r"`(pkg:\S+\.yaml)`", text):
        assert load_recipe(resolve_path(path)).name, path


def test_docs_hold_no_internal_notes():
    """Users read docs/: no issue numbers, no remarks about when something was run, no files of the developers'
    workspace beside the checkout (../shared, shared/DESIGN.md) that a user of the package does not have."""
    for page in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]:
        text = page.read_text()
        assert not re.search(r"\b[Ii]ssues? (\d|notes)", text), page
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), page
        assert not re.search(r"\.\./shared\b|\bshared/(DESIGN|FACTS|STYLE)\.md", text), (
            page,
            re.findall(r".*(?:\.\./shared|shared/\w+\.md).*", text),
        )
