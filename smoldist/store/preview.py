"""`smoldist preview`: the first N records as the model will see them, trained tokens highlighted.

    smoldist preview                          # the demo recipe
    smoldist preview launch/smollm2-135m/gsm8k.yaml -n 3

In a terminal, trained tokens are green and the rest dim; otherwise trained spans are wrapped in
[[ ]] markers. Each record shows its token counts and warnings (nothing trained, too long).
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter

import numpy as np

from smoldist.config import DataConfig, ModelConfig
from smoldist.data.encode import IGNORE, Encoder
from smoldist.data.preference import CONVERTERS as PAIR_CONVERTERS
from smoldist.data.preference import PairEncoder
from smoldist.data.records import Tally, iter_documents
from smoldist.errors import DataError
from smoldist.store.pair_build import is_preference
from smoldist.store.plan import plan_store
from smoldist.store.report import ignored_line

OPEN, CLOSE = "[[", "]]"


def spans(ids: np.ndarray, labels: np.ndarray) -> list[tuple[bool, list[int]]]:
    """Consecutive runs of (trained?, token ids), to print each run in one style."""
    trained = labels != IGNORE
    out: list[tuple[bool, list[int]]] = []
    for flag, group in itertools.groupby(zip(trained.tolist(), ids.tolist()), key=lambda x: x[0]):
        out.append((flag, [t for _, t in group]))
    return out


def warnings_for(n_tokens: int, n_trained: int, data: DataConfig, conversation: bool = False) -> list[str]:
    out = []
    if n_trained == 0:
        out.append("no token of this record is trained (empty trained span)")
    if n_tokens > data.seq_len:
        turns = conversation and data.overflow == "split" and data.loss_on == "assistant"
        how = "it is cut at its turns, each piece with its context" if turns else f"overflow '{data.overflow}' applies"
        out.append(f"{n_tokens} tokens > data.seq_len {data.seq_len}: {how}")
    return out


def preview(model: ModelConfig, data: DataConfig, n: int = 3, color: bool | None = None, out=None) -> list[dict]:
    """Print and return the first n valid records with their tokens and trained spans."""
    from rich.console import Console
    from rich.text import Text

    out = out or sys.stdout
    color = out.isatty() if color is None else color
    console = Console(file=out, force_terminal=color, no_color=not color, highlight=False, soft_wrap=True)
    plan = plan_store(model, data)  # the sources, tokenizer and template that `prepare` would use
    sources, tok = plan.sources, plan.tok
    encoder = Encoder.for_template(tok, plan.template, data.loss_on)
    tally = Tally(sources, data.on_invalid)
    pairs = is_preference(data)  # a pair shows as its two sequences, chosen then rejected
    check, converters = (None, PAIR_CONVERTERS) if pairs else (plan.tool_support, None)
    first = list(itertools.islice(iter_documents(sources, data.seed, data.loss_on, tally, check, converters), n))
    doc_source, docs, where = [s for s, _, _ in first], [d for _, d, _ in first], [p for _, _, p in first]
    shown = []
    batch = (PairEncoder(encoder).encode(docs) if pairs else encoder.encode(docs)) if docs else None
    if pairs and batch is not None:
        bad = {j for j, _, _ in batch.invalid}
        for j, reason, detail in batch.invalid:
            console.print(f"pair {j} ({where[j]}) is invalid ({reason}): {detail}")
        doc_source = [s for j, s in enumerate(doc_source) if j not in bad for _ in (0, 1)]
        where = [p for j, p in enumerate(where) if j not in bad for _ in (0, 1)]
    start = 0
    for i, length in enumerate(batch.lengths.tolist() if batch else []):
        ids, labels = batch.ids[start : start + length], batch.labels[start : start + length]
        start += length
        n_trained = int((labels != IGNORE).sum())
        text = Text()
        for trained, group in spans(ids, labels):
            piece = tok.decode(group)
            if color:
                text.append(piece, style="bold green" if trained else "dim")
            else:
                text.append(f"{OPEN}{piece}{CLOSE}" if trained else piece)
        # the record's file and line, whole (a rule would cut a long path to the terminal's width)
        name = f"pair {i // 2} {('chosen', 'rejected')[i % 2]}, {where[i]}" if pairs else where[i]
        console.print(f"── {name} (source {doc_source[i]}): {length} tokens, {n_trained} trained ──")
        if not pairs and docs[i].untrained:
            console.print(f"{len(docs[i].untrained)} assistant turn(s) not trained (weight 0 / train: false)")
        console.print(text)
        warns = warnings_for(length, n_trained, data, not pairs and docs[i].messages is not None)
        for w in warns:
            console.print(f"warning: {w}", style="yellow" if color else None)
        shown.append({"tokens": length, "trained": n_trained, "warnings": warns})
    invalid = sum((c.invalid for c in tally.counts), start=Counter())
    if invalid:
        console.print(f"skipped invalid records while reading: {dict(invalid)}")
    for line in tally.format_mismatches():
        console.print(line)
    for i, c in enumerate(tally.counts):
        if c.ignored:
            console.print(f"data.sources.{i}: {ignored_line(c.ignored)}")
    if not docs:  # nothing valid to show: a failure, as `prepare` of these sources would be
        raise DataError(f"preview: no valid records in the first {sum(c.read for c in tally.counts)} read")
    return shown
