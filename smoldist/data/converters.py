"""Converters: each turns one raw record into a conversation (list of {role, content}) or a plain text.

Selected per source by `format`. A record that cannot be converted raises `InvalidRecord` with a
short reason code (counted in the manifest) and a human detail (printed with its position).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}

# Reason codes, in the order a record is checked.
REASONS = {
    "not_utf8": "unreadable line (not UTF-8)",
    "bad_json": "unreadable line (bad JSON)",
    "not_a_record": "record is not a JSON object",
    "missing_field": "a required field is missing",
    "wrong_type": "a field has the wrong type",
    "empty_conversation": "conversation has no messages",
    "unknown_role": "a message has a role other than system/user/assistant",
    "system_not_first": "a system message is not the first message",
    "content_not_string": "a message's content is not a string",
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
    """What the converters produce: a conversation to template, or a text to train on whole."""

    messages: list[dict] | None = None
    text: str | None = None


def field(record: Any, name: str, kind: type | tuple = str) -> Any:
    if not isinstance(record, dict):
        raise InvalidRecord("not_a_record", f"record is a {type(record).__name__}, not an object")
    if name not in record or record[name] is None:
        raise InvalidRecord(
            "missing_field", f"field '{name}' is missing (fields: {', '.join(map(str, record)) or 'none'})"
        )
    value = record[name]
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InvalidRecord("wrong_type", f"field '{name}' is a {type(value).__name__}, expected {want}")
    return value


def check_conversation(messages: list[dict], loss_on: str) -> list[dict]:
    """The checks every conversation passes before templating, whatever format it came from."""
    if not messages:
        raise InvalidRecord("empty_conversation", "conversation has no messages")
    for i, m in enumerate(messages):
        if m["role"] not in ROLES:
            raise InvalidRecord("unknown_role", f"message {i} has role '{m['role']}' (valid: {', '.join(ROLES)})")
        if m["role"] == "system" and i != 0:
            raise InvalidRecord("system_not_first", f"message {i} is a system message; only the first may be")
        if not isinstance(m["content"], str):
            raise InvalidRecord(
                "content_not_string", f"message {i} content is a {type(m['content']).__name__}, not a string"
            )
    if loss_on == "assistant" and not any(m["role"] == "assistant" for m in messages):
        raise InvalidRecord("no_assistant_turn", "no assistant message to train on")
    return messages


def turns(record: Any, list_field: str, role_key: str, content_key: str, role_map: dict | None = None) -> list[dict]:
    raw = field(record, list_field, list)
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise InvalidRecord("wrong_type", f"{list_field}[{i}] is a {type(m).__name__}, not an object")
        for k in (role_key, content_key):
            if k not in m:
                raise InvalidRecord("missing_field", f"{list_field}[{i}] has no '{k}'")
        role = m[role_key]
        if role_map is not None:
            role = role_map.get(role, role)
        out.append({"role": role, "content": m[content_key]})
    return out


def convert_messages(record: Any, opts: Any, loss_on: str) -> Document:
    msgs = turns(record, opts.messages_field or "messages", opts.role_field, opts.content_field)
    return Document(messages=check_conversation(msgs, loss_on))


def convert_sharegpt(record: Any, opts: Any, loss_on: str) -> Document:
    msgs = turns(record, opts.messages_field or "conversations", "from", "value", SHAREGPT_ROLES)
    return Document(messages=check_conversation(msgs, loss_on))


def system_first(opts: Any) -> list[dict]:
    return [{"role": "system", "content": opts.system_prompt}] if opts.system_prompt else []


def convert_gsm8k(record: Any, opts: Any, loss_on: str) -> Document:
    # The answer is kept as written: worked solution, <<calc>> annotations and the '#### n' line.
    q, a = field(record, "question"), field(record, "answer")
    return Document(
        messages=check_conversation(
            [*system_first(opts), {"role": "user", "content": opts.prefix + q}, {"role": "assistant", "content": a}],
            loss_on,
        )
    )


def convert_prompt_completion(record: Any, opts: Any, loss_on: str) -> Document:
    p, c = field(record, opts.prompt_field), field(record, opts.completion_field)
    return Document(
        messages=check_conversation(
            [*system_first(opts), {"role": "user", "content": opts.prefix + p}, {"role": "assistant", "content": c}],
            loss_on,
        )
    )


def convert_columns(record: Any, opts: Any, loss_on: str) -> Document:
    if not opts.columns:
        raise InvalidRecord("missing_field", "format 'columns' needs a 'columns' mapping of role -> column")
    msgs = system_first(opts)
    for role in ROLES:
        col = opts.columns.get(role)
        if col is None:
            continue
        text = field(record, col)
        msgs.append({"role": role, "content": (opts.prefix + text) if role == "user" else text})
    msgs.sort(key=lambda m: ROLES.index(m["role"]))
    return Document(messages=check_conversation(msgs, loss_on))


def convert_text(record: Any, opts: Any, loss_on: str) -> Document:
    text = field(record, opts.text_field)
    if not text:
        raise InvalidRecord("empty_text", f"field '{opts.text_field}' is empty")
    return Document(text=opts.prefix + text)


CONVERTERS: dict[str, Callable[[Any, Any, str], Document]] = {
    "messages": convert_messages,
    "sharegpt": convert_sharegpt,
    "gsm8k": convert_gsm8k,
    "prompt_completion": convert_prompt_completion,
    "columns": convert_columns,
    "text": convert_text,
}


def required_fields(spec: Any) -> list[str]:
    """The record fields a source's format reads (its SourceConfig names them)."""
    return {
        "messages": [spec.messages_field or "messages"],
        "sharegpt": [spec.messages_field or "conversations"],
        "gsm8k": ["question", "answer"],
        "prompt_completion": [spec.prompt_field, spec.completion_field],
        "columns": list((spec.columns or {}).values()),
        "text": [spec.text_field],
        "preference": ["chosen", "rejected"],
    }[spec.format]


# The fields each format reads under its defaults: what a record's own fields suggest it is
DEFAULT_FIELDS = (
    ("messages", {"messages"}),
    ("sharegpt", {"conversations"}),
    ("gsm8k", {"question", "answer"}),
    ("prompt_completion", {"prompt", "completion"}),
    ("text", {"text"}),
)


def format_mismatch(spec: Any, fields: list[str], where: str) -> str | None:
    """One line when a source's format reads fields its records lack: which it needs, which they have, which format
    would read them (a recipe's `format` stays when only the path is overridden)."""
    needs = required_fields(spec)
    if set(needs) <= set(fields):
        return None
    fits = next((fmt for fmt, names in DEFAULT_FIELDS if names <= set(fields) and fmt != spec.format), None)
    hint = f" (format '{fits}' reads them: {where}.format={fits})" if fits else ""
    return (
        f"{where}: format '{spec.format}' needs fields {', '.join(needs)}; the records have fields: "
        f"{', '.join(map(str, fields)) or 'none'}{hint}"
    )
