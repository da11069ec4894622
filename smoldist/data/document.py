"""What a record becomes (a `Document`), and why one cannot become anything (`InvalidRecord`, its reason codes)."""

from __future__ import annotations

from dataclasses import dataclass

# Reason codes, in the order a record is checked.
REASONS = {
    "not_utf8": "unreadable line (not UTF-8)",
    "bad_json": "unreadable line (bad JSON)",
    "not_a_record": "record is not a JSON object",
    "missing_field": "a required field is missing",
    "wrong_type": "a field has the wrong type",
    "json_completion": "the completion is a JSON object or list (serialize: json on the source writes it as text)",
    "empty_conversation": "conversation has no messages",
    "unknown_role": "a message has a role other than system/user/assistant/tool",
    "system_not_first": "a system message is not the first message",
    "content_not_string": "a message's content is not a string or a list of text parts",
    "non_text_content": "a message's content has a part that is not text (an image, audio)",
    "unsupported_key": "a message has a key that changes the turn and smoldist does not train it",
    "bad_weight": "a message's weight is not 0 or 1 (train: not true or false)",
    "bad_tool_call": "tools or tool_calls are not in the OpenAI shape",
    "template_ignores_tools": "the chat template renders the same text with and without the tools or tool calls",
    "no_assistant_turn": "no assistant turn to train on (loss_on: assistant)",
    "empty_text": "text document is empty",
    # preference pairs (data/preference.py)
    "empty_completion": "a chosen or rejected completion is empty",
    "identical_pair": "chosen and rejected are the same",
    "prompt_not_prefix": "the prompt's rendering is not a prefix of the pair's rendering",
}


class InvalidRecord(Exception):
    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class Document:
    """What the converters produce: a conversation to template (with its tools), or a text to train on whole."""

    messages: list[dict] | None = None
    text: str | None = None
    tools: list[dict] | None = None  # JSON schemas, given to the template as `tools=` (apply_chat_template's)
    untrained: tuple[int, ...] = ()  # indices of assistant messages kept as context without loss (weight 0)
    ignored: tuple[str, ...] = ()  # keys of the record's turns that smoldist does not read (the report counts them)
