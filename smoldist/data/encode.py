"""Render conversations with the chat template and tokenize them in large batches, with loss masks; spill to disk.

A renderer (data/templates/render.py) gives each conversation's text and the character spans
inside its `{% generation %}` blocks. The texts are tokenized in one `encode_batch` call of the
fast tokenizer, and a token carries loss when its first character lies inside such a span. The first token of
every document never carries loss: nothing before it in its document predicts it. Encoded batches go to a `TokenBuffer`
on disk as they come, so `prepare`'s memory is 8 bytes a document whatever the dataset's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smoldist.data.converters import Document
from smoldist.data.templates import has_generation_markers
from smoldist.data.templates.derive import check_end_of_turn, check_token_edges, derive_spans
from smoldist.data.templates.render import make_renderer
from smoldist.data.tokenizer import PrepTokenizer
from smoldist.data.turn_split import split_at_turns
from smoldist.errors import DataError

IGNORE = -100


@dataclass
class EncodedBatch:
    """A batch of documents as flat int32 buffers: ids, labels and per-document lengths; `pieces`: how many
    documents each input document became (a long conversation cut at its turns: several, or 0 when dropped)."""

    ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    pieces: np.ndarray | None = None  # None: one document each
    cuts: list = field(default_factory=list)  # (input document index, TurnCut) for conversations over seq_len

    def head(self, k: int) -> EncodedBatch:
        """The documents of the first k input documents."""
        pieces = self.pieces if self.pieces is not None else np.ones(len(self.lengths), dtype=np.int64)
        if k >= len(pieces):
            return self
        docs = int(pieces[:k].sum())
        n = int(self.lengths[:docs].sum())
        cuts = [(i, c) for i, c in self.cuts if i < k]
        return EncodedBatch(self.ids[:n], self.labels[:n], self.lengths[:docs], pieces[:k], cuts)


class Encoder:
    """Documents -> flat token buffers. `render` maps conversations to (texts, loss spans). With `seq_len`, a
    conversation longer than it is cut at its turns (turn_split.py) under `overflow: split`."""

    def __init__(
        self,
        backend_tokenizer,
        render,
        loss_on: str,
        eos_id: int,
        derived: bool = False,
        bos_id: int | None = None,
        split_len: int | None = None,
    ):
        self.tok = backend_tokenizer  # tokenizers.Tokenizer
        self.render = render
        self.loss_on = loss_on
        self.eos_id = eos_id
        self.derived = derived  # spans derived from prefix renderings: each document's token edges are checked
        self.bos_id = bos_id  # plain text starts with it: the tokenizer puts it before every text
        self.split_len = split_len  # conversations longer than this are cut at turn boundaries

    @classmethod
    def for_template(
        cls, tok: PrepTokenizer, template: str, loss_on: str, seq_len: int | None = None, overflow: str = "split"
    ) -> Encoder:
        """The encoder `prepare` and `preview` use: this tokenizer, this template's renderer (or, for a template
        without generation markers whose assistant turns alone are trained, spans derived from the template).
        `seq_len` given, `overflow: split` and assistant turns trained: long conversations are cut at turns."""
        split_len = seq_len if overflow == "split" and loss_on == "assistant" else None
        if loss_on == "assistant" and not has_generation_markers(template):
            eot = check_end_of_turn(template, tok.backend, tok.special_tokens)
            render = lambda convs, tools=None: derive_spans(template, tok.special_tokens, eot, convs, tools)  # noqa: E731
            return cls(tok.backend, render, loss_on, tok.eos_token_id, True, tok.bos_prefix, split_len)
        renderer = make_renderer(template, tok.special_tokens)
        return cls(tok.backend, renderer, loss_on, tok.eos_token_id, False, tok.bos_prefix, split_len)

    def encode_chats(self, docs: list[Document]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, labels) of each conversation: rendered with its tools, tokenized, loss on its trained turns."""
        if not docs:
            return []
        texts, spans = self.render([d.messages for d in docs], [d.tools for d in docs])
        out = []
        for doc, enc, doc_spans in zip(docs, self.tok.encode_batch(texts, add_special_tokens=False), spans):
            ids = np.asarray(enc.ids, dtype=np.int32)
            if self.derived:
                check_token_edges(enc, doc_spans, doc.messages)
            kept, context = weighted_spans(doc, doc_spans)
            trained = span_mask(enc, kept) if self.loss_on == "assistant" else ~span_mask(enc, context)
            out.append((ids, labels_of(ids, trained)))
        return out

    def encode(self, docs: list[Document]) -> EncodedBatch:
        chats = iter(self.encode_chats([d for d in docs if d.messages is not None]))
        plain = [d.text for d in docs if d.messages is None]
        plain_encs = iter(self.tok.encode_batch_fast(plain, add_special_tokens=False) if plain else [])
        ids_out, lab_out, pieces, cuts = [], [], [], []
        for i, d in enumerate(docs):
            if d.messages is not None:
                ids, labels = next(chats)
                if self.split_len is not None and len(ids) > self.split_len:
                    parts, cut = split_at_turns(d, lambda p: self.encode_chats([p])[0], self.split_len)
                    cuts.append((i, cut)), pieces.append(len(parts))
                    ids_out += [p[0] for p in parts]
                    lab_out += [p[1] for p in parts]
                    continue
            else:  # plain text: every token trained, and the document ends with EOS (starts with BOS if the model's do)
                bos = [] if self.bos_id is None else [self.bos_id]
                ids = np.asarray(bos + next(plain_encs).ids + [self.eos_id], dtype=np.int32)
                labels = labels_of(ids, np.ones(len(ids), dtype=bool))
            ids_out.append(ids), lab_out.append(labels), pieces.append(1)
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int32)  # noqa: E731
        lengths = np.asarray([len(x) for x in ids_out], dtype=np.int64)
        return EncodedBatch(cat(ids_out), cat(lab_out), lengths, np.asarray(pieces, dtype=np.int64), cuts)


def labels_of(ids: np.ndarray, trained: np.ndarray) -> np.ndarray:
    """Labels: the id where trained, else IGNORE; never the first token (nothing in its document predicts it)."""
    labels = np.where(trained, ids, IGNORE).astype(np.int32)
    if len(labels):
        labels[0] = IGNORE
    return labels


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
