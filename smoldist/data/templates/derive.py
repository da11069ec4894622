"""Assistant masks derived from a chat template that has no `{% generation %}` markers (any model's own template).

For each assistant turn the conversation is rendered up to just before it (with the generation prompt) and up to and
including it: the text between the two is that turn as the template writes it, and the trained span is that text up to
and including the template's end-of-turn token. Every conversation is checked before it is trusted: each prefix
rendering must be a prefix of the full rendering (templates that rewrite earlier turns or drop reasoning fail here),
and the tokens must start exactly at both ends of each span (no token merged across a turn boundary; see
`check_token_edges`). A conversation that fails is refused with its record and the reason, never mis-masked.
"""

from __future__ import annotations

import numpy as np

from smoldist.data.templates import bundled_templates
from smoldist.data.templates.render import render_texts
from smoldist.errors import DataError

SENTINEL = "\x00smoldist-end-of-turn-probe\x00"


def end_of_turn_text(template: str, special_tokens: list[str], kwargs: dict) -> str | None:
    """The special token the template writes right after an assistant message (`<|eot_id|>`, `<end_of_turn>`)."""
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}]
    text = render_texts(template, [probe], False, kwargs)[0]
    if SENTINEL not in text:
        return None
    after = text[text.index(SENTINEL) + len(SENTINEL) :]
    return next((t for t in sorted(special_tokens, key=len, reverse=True) if t and after.startswith(t)), None)


def check_end_of_turn(template: str, backend, kwargs: dict) -> str:
    """The end-of-turn token, refused unless it is one token of this vocabulary: a model must be able to stop on it."""
    specials = [t.content for t in backend.get_added_tokens_decoder().values()]
    if template in bundled_templates():  # known without rendering: prepare with a bundled template skips transformers
        eot = "<|im_end|>" if "<|im_end|>" in specials else None
    else:
        eot = end_of_turn_text(template, specials, kwargs)
    if eot is None:
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}]
        text = render_texts(template, [probe], False, kwargs)[0]
        after = text[text.index(SENTINEL) + len(SENTINEL) :] if SENTINEL in text else ""
        raise DataError(
            f"model.chat_template: the template ends an assistant turn with {after[:20]!r}, not a single token "
            "of this tokenizer, so the model could not learn to stop there; use the model's own template "
            "(model.chat_template: tokenizer) or one whose end-of-turn marker is a special token of its vocabulary"
        )
    return eot


def derive_spans(
    template: str, kwargs: dict, eot: str, conversations: list[list[dict]], tools: list | None = None
) -> tuple[list[str], list]:
    """Full texts, and per conversation the [start, end) character spans of each assistant turn + end-of-turn;
    `tools`: each conversation's tool schemas (or None), rendered with every prefix of it."""
    tools = tools or [None] * len(conversations)
    turns = [[i for i, m in enumerate(msgs) if m.get("role") == "assistant"] for msgs in conversations]
    before = [msgs[:i] for msgs, idx in zip(conversations, turns) for i in idx]
    upto = [msgs[: i + 1] for msgs, idx in zip(conversations, turns) for i in idx]
    prefix_tools = [t for t, idx in zip(tools, turns) for _ in idx]
    texts = render_texts(template, conversations, False, kwargs, tools)
    before_texts = iter(render_texts(template, before, True, kwargs, prefix_tools))
    upto_texts = iter(render_texts(template, upto, False, kwargs, prefix_tools))
    all_spans = []
    for msgs, idx, full in zip(conversations, turns, texts):
        spans = []
        for i in idx:
            head, whole = next(before_texts), next(upto_texts)
            if not (whole.startswith(head) and full.startswith(whole)):
                refuse(
                    msgs,
                    f"the template is not prefix-stable at message {i}: rendering the conversation up to "
                    "that turn is not a prefix of the full rendering (it rewrites or drops earlier turns, "
                    "e.g. reasoning)",
                )
            turn = whole[len(head) :]
            cut = turn.rfind(eot)
            if cut < 0:
                refuse(msgs, f"assistant message {i} as rendered has no end-of-turn token {eot!r}")
            spans.append((len(head), len(head) + cut + len(eot)))
        all_spans.append(spans)
    return texts, all_spans


def check_token_edges(enc, spans: list[tuple[int, int]], messages: list[dict]) -> None:
    """Refuse a conversation with a token that straddles an assistant span's edge: its mask would not be that turn."""
    offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    for start, end in spans:
        for edge in (start, end):
            if np.any((offsets[:, 0] < edge) & (offsets[:, 1] > edge)):
                refuse(messages, f"a token merges across the assistant turn boundary at character {edge}")


def refuse(messages: list[dict], reason: str):
    record = repr(messages)
    raise DataError(
        f"model.chat_template: cannot derive exact assistant masks for the conversation "
        f"{record[:300] + ('...' if len(record) > 300 else '')}: {reason}; use a template with "
        "{% generation %} markers or data.loss_on: all"
    )
