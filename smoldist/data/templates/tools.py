"""Whether a chat template renders tools: a record with tools or tool calls is refused by one that ignores them.

A template that renders the same text with and without `tools=` (or writes an assistant turn's tool calls nowhere)
would train a tool-calling turn as an empty reply. It is found once per template, by rendering a probe
conversation both ways, and such records are counted invalid (`template_ignores_tools`) with a line naming it.
"""

from __future__ import annotations

import functools

from smoldist.data.document import Document, InvalidRecord
from smoldist.data.templates import bundled_templates
from smoldist.data.templates.render import render_texts

PROBE_NAME = "smoldist_probe_tool"
PROBE_TOOLS = [
    {
        "type": "function",
        "function": {"name": PROBE_NAME, "description": "a probe", "parameters": {"type": "object", "properties": {}}},
    }
]
PROBE_CALL = {"type": "function", "function": {"name": PROBE_NAME, "arguments": {"probe": "smoldist-probe-argument"}}}


@functools.cache  # one probe per template and process
def ignored_parts(template: str, special_tokens: tuple) -> tuple[str, ...]:
    """What of 'tools' and 'tool calls' the template writes nowhere."""
    if template in bundled_templates():  # they render both (docs/templates.md); no transformers import for them
        return ()
    kwargs, out = dict(special_tokens), []
    user = [{"role": "user", "content": "hi"}]
    if render_texts(template, [user], False, kwargs, [PROBE_TOOLS]) == render_texts(template, [user], False, kwargs):
        out.append("tools")
    call = [*user, {"role": "assistant", "content": "", "tool_calls": [PROBE_CALL]}]
    if "smoldist-probe-argument" not in render_texts(template, [call], False, kwargs)[0]:
        out.append("tool calls")
    return tuple(out)


class ToolSupport:
    """A document check for BatchConverter: refuses records with tools or tool calls the template would not render."""

    def __init__(self, template: str, name: str, special_tokens: dict):
        self.template, self.name = template, name
        self.special_tokens = tuple(sorted(special_tokens.items()))

    def __call__(self, doc: Document) -> None:
        if doc.messages is None:
            return
        wants = ["tools"] if doc.tools else []
        if any(m.get("tool_calls") for m in doc.messages):
            wants.append("tool calls")
        if not wants:
            return
        part = next((p for p in ignored_parts(self.template, self.special_tokens) if p in wants), None)
        if part is not None:
            raise InvalidRecord(
                "template_ignores_tools",
                f"model.chat_template '{self.name}' renders the same text with and without {part}, so this record's "
                f"{part} would not be trained; use a template that renders them (the bundled chatml/smollm2 do)",
            )
