"""Converters: each turns one raw record into a conversation (list of {role, content}) or a plain text.

Selected per source by `format`. A record that cannot be converted raises `InvalidRecord` with a
short reason code (counted in the manifest) and a human detail (printed with its position). Fields a
format does not read are named in the document (`ignored`), so the report lists them with counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from smoldist.data.document import REASONS, Document, InvalidRecord
from smoldist.data.turns import check_tools, message

__all__ = ["CONVERTERS", "REASONS", "Document", "InvalidRecord"]

ROLES = ("system", "user", "assistant", "tool")
COLUMN_ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "tool": "tool",
}
TOOLS_FIELD = "tools"  # messages/sharegpt: the record's tool schemas, given to the template as `tools=`


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


def text_field(record: Any, name: str, serialize: str | None) -> str:
    """A string field; a JSON object or list is written with json.dumps (keys in order) under `serialize: json`,
    else refused with that hint (a bare `wrong_type` would not say what to do)."""
    value = field(record, name, (str, dict, list))
    if isinstance(value, str):
        return value
    if serialize == "json":
        return json.dumps(value, ensure_ascii=False)
    raise InvalidRecord(
        "json_completion",
        f"field '{name}' is a JSON {'object' if isinstance(value, dict) else 'list'}, not text; add "
        "`serialize: json` to the source to train on it as json.dumps writes it (keys in order)",
    )


def check_conversation(messages: list[dict], loss_on: str, untrained: tuple = (), **doc: Any) -> Document:
    """The checks every conversation passes before templating, whatever format it came from; `untrained`: the
    assistant turns a weight keeps as context without loss."""
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
    untrained = tuple(i for i in untrained if messages[i]["role"] == "assistant")
    trained = (m for i, m in enumerate(messages) if i not in untrained) if untrained else messages
    if loss_on == "assistant" and not any(m["role"] == "assistant" for m in trained):
        why = "every assistant turn has weight 0" if untrained else "no assistant message to train on"
        raise InvalidRecord("no_assistant_turn", why)
    return Document(messages=messages, untrained=untrained, **doc)


def turns(
    record: Any, list_field: str, role_key: str, content_key: str, role_map: dict | None, loss_on: str
) -> Document:
    """A conversation from a record's list of turns and its `tools`, each turn checked by data/turns.py."""
    raw = field(record, list_field, list)
    ignored: set = set()  # keys of its turns that are not read: the record counts once per key
    msgs, untrained = [], []
    for i, m in enumerate(raw):
        if type(m) is dict and len(m) == 2 and type(m.get(content_key)) is str and role_key in m:
            role = m[role_key]  # the common turn, role and text alone: prepare's hot path
            msgs.append({"role": role_map.get(role, role) if role_map else role, "content": m[content_key]})
            continue
        if not isinstance(m, dict):
            raise InvalidRecord("wrong_type", f"{list_field}[{i}] is a {type(m).__name__}, not an object")
        for k in (role_key, content_key):
            if k not in m:
                raise InvalidRecord("missing_field", f"{list_field}[{i}] has no '{k}'")
        msg, trained = message(m, i, list_field, role_key, content_key, role_map, ignored)
        msgs.append(msg)
        if not trained:
            untrained.append(i)
    tools = check_tools(record.get(TOOLS_FIELD))
    return check_conversation(msgs, loss_on, tuple(untrained), tools=tools, ignored=tuple(sorted(ignored)))


def convert_messages(record: Any, opts: Any, loss_on: str) -> Document:
    return turns(record, opts.messages_field or "messages", opts.role_field, opts.content_field, None, loss_on)


def convert_sharegpt(record: Any, opts: Any, loss_on: str) -> Document:
    return turns(record, opts.messages_field or "conversations", "from", "value", SHAREGPT_ROLES, loss_on)


def system_first(opts: Any) -> list[dict]:
    return [{"role": "system", "content": opts.system_prompt}] if opts.system_prompt else []


def convert_gsm8k(record: Any, opts: Any, loss_on: str) -> Document:
    # The answer is kept as written: worked solution, <<calc>> annotations and the '#### n' line.
    q, a = field(record, "question"), field(record, "answer")
    user = {"role": "user", "content": opts.prefix + q}
    return check_conversation([*system_first(opts), user, {"role": "assistant", "content": a}], loss_on)


def convert_prompt_completion(record: Any, opts: Any, loss_on: str) -> Document:
    p = text_field(record, opts.prompt_field, opts.serialize)
    c = text_field(record, opts.completion_field, opts.serialize)
    user = {"role": "user", "content": opts.prefix + p}
    return check_conversation([*system_first(opts), user, {"role": "assistant", "content": c}], loss_on)


def convert_columns(record: Any, opts: Any, loss_on: str) -> Document:
    if not opts.columns:
        raise InvalidRecord("missing_field", "format 'columns' needs a 'columns' mapping of role -> column")
    msgs = system_first(opts)
    for role in COLUMN_ROLES:
        col = opts.columns.get(role)
        if col is None:
            continue
        text = field(record, col)
        msgs.append({"role": role, "content": (opts.prefix + text) if role == "user" else text})
    msgs.sort(key=lambda m: COLUMN_ROLES.index(m["role"]))
    return check_conversation(msgs, loss_on)


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


def read_fields(spec: Any) -> frozenset[str]:
    """Every record field a source's format reads; the others are listed as ignored, with counts, never refused."""
    optional = {"messages": {TOOLS_FIELD}, "sharegpt": {TOOLS_FIELD}, "preference": {spec.prompt_field, TOOLS_FIELD}}
    return frozenset(required_fields(spec)) | optional.get(spec.format, set())


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
