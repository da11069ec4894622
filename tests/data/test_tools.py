"""Tools, tool calls and tool replies reach the template with `tools=`, as apply_chat_template gives them: the calls
are trained, the replies are not; a template that ignores tools refuses such records, naming itself."""

from __future__ import annotations

import io
import json

import pytest

from smoldist.config import load_recipe
from smoldist.data.converters import CONVERTERS
from smoldist.data.templates import load_template
from smoldist.store.build import prepare
from smoldist.store.preview import preview
from tests.helpers import REPO, family_tokenizer, recipe_dict, write_jsonl, write_recipe
from tests.tool_chats import WEATHER, assert_exact_with_tools, tool_record

CHATML = ["<|im_start|>", "<|im_end|>"]
DEMO = REPO / "smoldist" / "demo" / "tokenizer"
# SmolLM2-Instruct's own template, byte for byte: it writes role and content only.
STOCK = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def docs(*records):
    from smoldist.config import SourceConfig

    return [CONVERTERS["messages"](r, SourceConfig(path="x"), "assistant") for r in records]


def preview_text(tmp_path, records, **model):
    f = write_jsonl(tmp_path / "tools.jsonl", records)
    raw = recipe_dict(tmp_path, [{"path": str(f)}])
    raw["model"].update(model)
    r = load_recipe(write_recipe(tmp_path, raw))
    buf = io.StringIO()
    preview(r.model, r.data, n=10, color=False, out=buf)
    return buf.getvalue(), r


def test_bundled_template_renders_tools_calls_and_replies_in_chatml(tmp_path):
    out, _ = preview_text(tmp_path, [tool_record()], chat_template="chatml")
    schema = json.dumps(WEATHER, ensure_ascii=False)
    assert out.startswith("─") and "<|im_start|>system\nYou answer briefly.\n\n# Tools\n" in out
    assert f"<tools>\n{schema}\n</tools>" in out
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert f"<|im_start|>assistant\n[[{call}<|im_end|>]]" in out  # the call is trained
    assert '<|im_start|>tool\n{"temp_c": 18}<|im_end|>' in out and '[[{"temp_c"' not in out  # the reply is not
    rome = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    assert f"[[Checking both.\n{rome}\n<tool_call>" in out  # arguments given as a JSON string render the same


@pytest.mark.parametrize("name", ["chatml", "smollm2"])
def test_bundled_templates_match_apply_chat_template_with_tools(tmp_path, name):
    template = load_template(name)
    folder = family_tokenizer(tmp_path / "tok", template, CHATML, "<|im_start|>", "<|im_end|>")
    no_system = dict(tool_record(), messages=tool_record()["messages"][1:])
    assert_exact_with_tools(
        folder, template, "<|im_end|>", docs(tool_record(), tool_record(weight0=True, parts=True), no_system), name
    )


def test_a_users_jinja_and_a_models_own_template_without_markers_render_tools(tmp_path):
    marked = load_template("chatml")
    unmarked = marked.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    records = docs(tool_record(), tool_record(weight0=True))
    folder = family_tokenizer(tmp_path / "own", unmarked, CHATML, "<|im_start|>", "<|im_end|>")
    assert_exact_with_tools(folder, unmarked, "<|im_end|>", records)  # derived masks
    (tmp_path / "mine.jinja").write_text(marked)
    assert_exact_with_tools(folder, marked, "<|im_end|>", records, str(tmp_path / "mine.jinja"))


def test_a_template_that_ignores_tools_refuses_such_records_naming_it(tmp_path):
    folder = family_tokenizer(tmp_path / "stock", STOCK, CHATML, "<|im_start|>", "<|im_end|>")
    plain = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    only_calls = dict(tool_record())
    del only_calls["tools"]
    f = write_jsonl(tmp_path / "t.jsonl", [tool_record(), only_calls, plain])
    raw = recipe_dict(tmp_path, [{"path": str(f)}])
    raw["model"].update(tokenizer=str(folder), chat_template="tokenizer")
    r = load_recipe(write_recipe(tmp_path, raw))
    per = prepare(r.model, r.data, verbose=False).manifest["counts"]["per_source"][0]
    assert per["invalid"] == {"template_ignores_tools": 2} and per["valid"] == 1
    assert "model.chat_template 'tokenizer' renders the same text with and without tools" in per["first_invalid"][0]
    assert "without tool calls" in per["first_invalid"][1]
