"""Render conversations with the chat template and tokenize them in large batches, with loss masks; spill to disk.

A renderer (data/templates/render.py) gives each conversation's text and the character spans
inside its `{% generation %}` blocks. The texts are tokenized in one `encode_batch` call of the
fast tokenizer, and a token carries loss when its first character lies inside such a span. The first token of
every document never carries loss: nothing before it in its document predicts it. Encoded batches go to a `TokenBuffer`
on disk as they come, so `prepare`'s memory is 8 bytes a document whatever the dataset's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smoldist.data.converters import Document
from smoldist.data.templates import has_generation_markers
from smoldist.data.templates.derive import check_end_of_turn, check_token_edges, derive_spans
from smoldist.data.templates.render import make_renderer
from smoldist.data.tokenizer import PrepTokenizer
from smoldist.errors import DataError

IGNORE = -100


@dataclass
class EncodedBatch:
    """A batch of documents as flat int32 buffers: ids, labels and per-document lengths."""

    ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray

    def head(self, k: int) -> EncodedBatch:
        """The first k documents."""
        if k >= len(self.lengths):
            return self
        n = int(self.lengths[:k].sum())
        return EncodedBatch(self.ids[:n], self.labels[:n], self.lengths[:k])


class Encoder:
    """Documents -> flat token buffers. `render` maps conversations to (texts, loss spans)."""

    def __init__(
        self, backend_tokenizer, render, loss_on: str, eos_id: int, derived: bool = False, bos_id: int | None = None
    ):
        self.tok = backend_tokenizer  # tokenizers.Tokenizer
        self.render = render
        self.loss_on = loss_on
        self.eos_id = eos_id
        self.derived = derived  # spans derived from prefix renderings: each document's token edges are checked
        self.bos_id = bos_id  # plain text starts with it: the tokenizer puts it before every text

    @classmethod
    def for_template(cls, tok: PrepTokenizer, template: str, loss_on: str) -> Encoder:
        """The encoder `prepare` and `preview` use: this tokenizer, this template's renderer (or, for a template
        without generation markers whose assistant turns alone are trained, spans derived from the template)."""
        if loss_on == "assistant" and not has_generation_markers(template):
            eot = check_end_of_turn(template, tok.backend, tok.special_tokens)
            render = lambda convs, tools=None: derive_spans(template, tok.special_tokens, eot, convs, tools)  # noqa: E731
            return cls(tok.backend, render, loss_on, tok.eos_token_id, derived=True, bos_id=tok.bos_prefix)
        return cls(
            tok.backend, make_renderer(template, tok.special_tokens), loss_on, tok.eos_token_id, bos_id=tok.bos_prefix
        )

    def encode(self, docs: list[Document]) -> EncodedBatch:
        chat_docs = [d for d in docs if d.messages is not None]
        chats = [d.messages for d in chat_docs]
        texts, spans = self.render(chats, [d.tools for d in chat_docs]) if chats else ([], [])
        chat_encs = self.tok.encode_batch(texts, add_special_tokens=False) if texts else []
        plain = [d.text for d in docs if d.messages is None]
        plain_encs = self.tok.encode_batch_fast(plain, add_special_tokens=False) if plain else []
        ids_out, lab_out, lengths = [], [], []
        ci = pi = 0
        for d in docs:
            if d.messages is not None:
                enc, doc_spans = chat_encs[ci], spans[ci]
                ci += 1
                ids = np.asarray(enc.ids, dtype=np.int32)
                if self.derived:
                    check_token_edges(enc, doc_spans, chats[ci - 1])
                kept, context = weighted_spans(chat_docs[ci - 1], doc_spans)
                if self.loss_on == "assistant":
                    trained = span_mask(enc, kept)
                else:
                    trained = ~span_mask(enc, context)
            else:  # plain text: every token trained, and the document ends with EOS (starts with BOS if the model's do)
                bos = [] if self.bos_id is None else [self.bos_id]
                ids = np.asarray(bos + plain_encs[pi].ids + [self.eos_id], dtype=np.int32)
                pi += 1
                trained = np.ones(len(ids), dtype=bool)
            labels = np.where(trained, ids, IGNORE).astype(np.int32)
            if len(labels):
                labels[0] = IGNORE
            ids_out.append(ids), lab_out.append(labels), lengths.append(len(ids))
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int32)  # noqa: E731
        return EncodedBatch(cat(ids_out), cat(lab_out), np.asarray(lengths, dtype=np.int64))


def weighted_spans(doc: Document, spans: list[tuple[int, int]]) -> tuple[list, list]:
    """(spans trained, spans of assistant turns kept as context by `weight: 0`): one span per assistant turn."""
    if not doc.untrained:
        return spans, []
    assistant = [i for i, m in enumerate(doc.messages) if m["role"] == "assistant"]
    if len(spans) != len(assistant):
        raise DataError(
            f"model.chat_template: it marks {len(spans)} trained span(s) in a conversation with {len(assistant)} "
            "assistant turn(s), so a turn's weight cannot be applied; use a template with one {% generation %} block "
            "per assistant turn"
        )
    off = {assistant.index(i) for i in doc.untrained}
    return [s for k, s in enumerate(spans) if k not in off], [s for k, s in enumerate(spans) if k in off]


def span_mask(enc, spans: list[tuple[int, int]]) -> np.ndarray:
    """Tokens whose first character lies in a span, found at the span edges only (not per token)."""
    mask = np.zeros(len(enc.ids), dtype=bool)
    for start, end in spans:
        if end <= start:
            continue
        first, last = enc.char_to_token(start), enc.char_to_token(end - 1)
        if first is None or last is None:  # a character no token claims: fall back to every token's offsets
            starts = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
            return mask | tokens_in_spans(starts, spans)
        if enc.token_to_chars(first)[0] < start:  # the token straddles the span start: it begins outside
            first += 1
        mask[first : last + 1] = True
    return mask


def tokens_in_spans(token_starts: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """True for each token whose first character falls inside one of the [start, end) spans."""
    if not spans:
        return np.zeros(len(token_starts), dtype=bool)
    starts = np.asarray([s for s, _ in spans], dtype=np.int64)
    ends = np.asarray([e for _, e in spans], dtype=np.int64)
    idx = np.searchsorted(starts, token_starts, side="right") - 1
    return (idx >= 0) & (token_starts < ends[np.maximum(idx, 0)])


class TokenBuffer:
    """Encoded documents on disk, appended batch by batch: two int32 files (ids, labels) and a length per document."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.ids_path, self.labels_path = folder / "ids.int32", folder / "labels.int32"
        self._ids, self._labels = open(self.ids_path, "wb"), open(self.labels_path, "wb")  # noqa: SIM115 - closed by close()
        self._lengths: list[np.ndarray] = []

    def append(self, batch: EncodedBatch) -> None:
        batch.ids.astype(np.int32, copy=False).tofile(self._ids)
        batch.labels.astype(np.int32, copy=False).tofile(self._labels)
        self._lengths.append(batch.lengths)

    def close(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, labels) memory-mapped, and the per-document lengths."""
        self._ids.close(), self._labels.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        if not lengths.sum():
            return np.zeros(0, np.int32), np.zeros(0, np.int32), lengths
        ids = np.memmap(self.ids_path, dtype=np.int32, mode="r")
        labels = np.memmap(self.labels_path, dtype=np.int32, mode="r")
        return ids, labels, lengths
