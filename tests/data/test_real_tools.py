"""The real SmolLM2 tokenizer with a template that renders tools: records with tool calls, content parts and
weights, token-identical to `apply_chat_template(messages, tools=...)`, the trained tokens exactly the trained
assistant turns (each with its <|im_end|>), for the bundled template and for the stock one with tools added."""

from __future__ import annotations

import pytest

from smoldist.config import SourceConfig
from smoldist.data.converters import CONVERTERS
from smoldist.data.templates import load_template
from tests.tool_chats import assert_exact_with_tools, tool_record

pytestmark = pytest.mark.real


def records():
    plain = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "2+2?"}]},
            {"role": "assistant", "content": "4"},
        ]
    }
    weighted = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bad reply.", "weight": 0},
            {"role": "user", "content": "Again?"},
            {"role": "assistant", "content": "Good reply.", "train": True},
        ]
    }
    no_system = dict(tool_record(parts=True), messages=tool_record(parts=True)["messages"][1:])
    raw = [tool_record(), tool_record(weight0=True, parts=True), no_system, plain, weighted]
    return [CONVERTERS["messages"](r, SourceConfig(path="x"), "assistant") for r in raw]


@pytest.mark.parametrize("name", ["smollm2", "chatml"])
def test_real_smollm2_tokenizer_with_the_bundled_tools_template_is_exact(real_instruct, name):
    docs = records()
    assert [len(d.untrained) for d in docs] == [0, 1, 0, 0, 1]
    assert_exact_with_tools(real_instruct, load_template(name), "<|im_end|>", docs, name)


def test_real_smollm2_tokenizer_with_a_tools_template_without_markers_derives_exact_masks(real_instruct):
    unmarked = load_template("smollm2").replace("{% generation %}", "").replace("{% endgeneration %}", "")
    assert_exact_with_tools(real_instruct, unmarked, "<|im_end|>", records(), "tokenizer")
