"""A conversation longer than seq_len, cut at turn boundaries so that no piece trains a turn without its prompt.

Each piece ends at a trained assistant turn; its new turns take at most half of seq_len (a single longer turn takes
what it needs), and it is rendered from the conversation's start: the system prompt, then the turns before its new
ones as context without loss, the oldest trimmed (whole turns, from a user turn on) when they do not all fit. An
assistant turn that does not fit even with only its own prompt is dropped, counted; a conversation none of whose turns
fit is dropped whole. Plain text keeps the token split of packing.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from smoldist.data.document import Document

Encoded = tuple[np.ndarray, np.ndarray]  # ids, labels


@dataclass
class TurnCut:
    """What became of one conversation over seq_len (the prepare report sums these)."""

    pieces: int  # documents it became (0: dropped whole)
    trimmed: int  # pieces whose earliest context turns were left out to fit
    turns_dropped: int  # trained assistant turns that did not fit with their own prompt


def last_fitting(lo: int, hi: int, fits: Callable[[int], bool]) -> int | None:
    """The greatest x in [lo, hi] with fits(x), for fits true up to some point and false after it; None if none."""
    if lo > hi or not fits(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def piece(doc: Document, first: int, context: int, new: int, end: int) -> Document:
    """The system prompt (messages before `first`), turns [context, new) as context without loss, [new, end] new."""
    head = list(range(first))
    keep = head + list(range(context, end + 1))
    untrained = tuple(
        j for j, i in enumerate(keep) if doc.messages[i]["role"] == "assistant" and (i < new or i in doc.untrained)
    )
    return replace(doc, messages=[doc.messages[i] for i in keep], untrained=untrained)


def split_at_turns(doc: Document, encode: Callable[[Document], Encoded], seq_len: int) -> tuple[list[Encoded], TurnCut]:
    """The pieces of `doc` (each at most seq_len tokens, encoded by `encode`) and what was cut."""
    msgs = doc.messages
    first = 1 if msgs[0]["role"] == "system" else 0
    targets = [i for i, m in enumerate(msgs) if m["role"] == "assistant" and i not in doc.untrained]
    cache: dict[tuple[int, int, int], Encoded] = {}

    def encoded(context: int, new: int, end: int) -> Encoded:
        if (context, new, end) not in cache:
            cache[context, new, end] = encode(piece(doc, first, context, new, end))
        return cache[context, new, end]

    def fits(context: int, new: int, end: int, room: int = seq_len) -> bool:
        return len(encoded(context, new, end)[0]) <= room

    out, trimmed, dropped, new, t = [], 0, 0, first, 0
    while t < len(targets):
        last = last_fitting(t, len(targets) - 1, lambda u, n=new: fits(n, n, targets[u], seq_len // 2))
        if last is None and fits(new, new, targets[t]):  # one turn over half the room: alone, with less context
            last = t
        if last is None:  # this turn does not fit even with only its own prompt
            dropped, new, t = dropped + 1, targets[t] + 1, t + 1
            continue
        end = targets[last]
        starts = sorted({first, new, *(i for i in range(first, new) if msgs[i]["role"] == "user")})
        k = len(starts) - 1 - last_fitting(0, len(starts) - 1, lambda j, s=starts, n=new, e=end: fits(s[-1 - j], n, e))
        trimmed += starts[k] > first
        out.append(encoded(starts[k], new, end))
        new, t = end + 1, last + 1
    return out, TurnCut(len(out), trimmed, dropped)
