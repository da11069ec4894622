"""One message of a conversation as people export it, checked and made what the template renders.

Content may be a string or a list of parts (the OpenAI shape): text parts are joined in order, any other part (an
image, audio) makes the record invalid. An assistant turn may call tools (`tool_calls`, OpenAI shape, arguments an
object or a JSON string); a `tool` turn replies to a call. `weight: 0` or `train: false` keeps an assistant turn as
context without loss. A key that changes what a turn means and that smoldist does not use (`reasoning_content`) makes
the record invalid, naming it; any other key is ignored and counted, so the prepare report lists it.
"""

from __future__ import annotations

import json
from typing import Any

from smoldist.data.document import InvalidRecord

# Keys a message may carry that smoldist renders as given (templates read them with the role and content).
PASSED_ON = ("tool_calls", "tool_call_id", "name")
WEIGHT_KEYS = ("weight", "train")
KNOWN_KEYS = frozenset(PASSED_ON + WEIGHT_KEYS)
# Keys that change what a turn means and that smoldist does not use: never ignored silently.
REFUSED_KEYS = ("reasoning_content", "reasoning", "thinking", "function_call", "refusal", "audio", "images")


def text_of(content: Any, where: str) -> str:
    """A message's content as one string: a string as is, a list of text parts joined in order."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRecord("content_not_string", f"{where} content is a {type(content).__name__}, not a string")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(kind, str) and kind != "text":
            raise InvalidRecord("non_text_content", f"{where} content part {j} is '{kind}', not text")
        else:
            raise InvalidRecord(
                "content_not_string", f"{where} content part {j} is not a text part ({{'type': 'text', 'text': ...}})"
            )
    return "".join(texts)


def trained_flag(m: dict, where: str) -> bool:
    """False for `weight: 0` or `train: false`; True for `weight: 1`, `train: true` or neither; refused otherwise."""
    trained = True
    for key in WEIGHT_KEYS:
        value = m.get(key)
        if value is None:  # absent (Arrow fills a key missing from some messages with null)
            continue
        ok = (0, 1) if key == "weight" else (False, True)
        if isinstance(value, bool) != (key == "train") or value not in ok:
            valid = "0 or 1" if key == "weight" else "true or false"
            raise InvalidRecord("bad_weight", f"{where} has {key} {value!r} (valid: {valid}, or leave it out)")
        trained = trained and bool(value)
    return trained


def check_tool_calls(calls: Any, where: str) -> list:
    """OpenAI-shaped calls, each `{"type": "function", "function": {"name", "arguments"}}`, kept as given."""
    if not isinstance(calls, list):
        raise InvalidRecord("bad_tool_call", f"{where} tool_calls is a {type(calls).__name__}, not a list")
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRecord("bad_tool_call", f"{where} tool_calls[{j}] has no function with a name")
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError as e:
                raise InvalidRecord(
                    "bad_tool_call", f"{where} tool_calls[{j}] arguments are not JSON ({e.msg})"
                ) from None
        if not isinstance(args, dict):
            raise InvalidRecord("bad_tool_call", f"{where} tool_calls[{j}] arguments are not a JSON object")
    return calls


def check_tools(tools: Any) -> list | None:
    """The record's `tools` (JSON schemas), a list or a JSON string of one; None when absent."""
    if tools is None:
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as e:
            raise InvalidRecord("bad_tool_call", f"field 'tools' is a string but not JSON ({e.msg})") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise InvalidRecord("bad_tool_call", "field 'tools' is not a list of JSON schemas (objects)")
    return tools or None


def message(
    raw: dict, i: int, list_field: str, role_key: str, content_key: str, role_map: dict | None, ignored: set
) -> tuple[dict, bool]:
    """(the message as rendered, whether it is trained); keys it does not read are counted in `ignored`."""
    role = raw[role_key]
    role = role_map.get(role, role) if role_map is not None else role
    content = raw[content_key]
    where = f"message {i}"
    known = {role_key, content_key, *KNOWN_KEYS}
    for key, value in raw.items():
        if value is None or key in known:
            continue
        if key in REFUSED_KEYS:
            raise InvalidRecord(
                "unsupported_key", f"{where} has '{key}', which changes the turn and smoldist does not train it"
            )
        ignored.add(f"{list_field}[].{key}")
    calls = raw.get("tool_calls") or None  # an empty list calls nothing
    if content is None and calls is not None:  # OpenAI: an assistant turn that only calls tools has content null
        content = ""
    out = {"role": role, "content": text_of(content, where)}
    if calls is not None:
        if role != "assistant":
            raise InvalidRecord("bad_tool_call", f"{where} has tool_calls but role '{role}' (only assistant calls)")
        out["tool_calls"] = check_tool_calls(calls, where)
    for key in ("tool_call_id", "name"):
        if raw.get(key) is not None:
            out[key] = raw[key]
    trained = trained_flag(raw, where)
    if trained and role != "assistant" and any(raw.get(k) is not None for k in WEIGHT_KEYS):
        raise InvalidRecord("bad_weight", f"{where} is a {role} turn with weight 1: only assistant turns are trained")
    return out, trained
