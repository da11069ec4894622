"""Raw records -> documents: cut into batches by the main process, parsed and converted in the workers.

The main process only reads: JSONL lines stay undecoded bytes, other formats come as the records their
reader gives. The workers select (`fraction`), parse, convert and validate each record beside tokenizing
it, and report per record what became of it. Back in the main process, in source order, a `Tally`
applies what needs that order: the counts, `max_samples`, and `on_invalid: error` naming the first bad
record. So the result is the same with 1 worker or 16, and the main process stays free to feed them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smoldist.data.converters import CONVERTERS, Document, InvalidRecord, format_mismatch, read_fields
from smoldist.data.sources import ResolvedSource, Unreadable, iter_records, jsonl_lines, parse_line
from smoldist.errors import DataError

BATCH = 1000
SHOW_INVALID = 5
NOT_SELECTED, VALID, INVALID = 0, 1, 2


@dataclass
class SourceCounts:
    read: int = 0
    valid: int = 0
    skipped_by_selection: int = 0
    invalid: Counter = field(default_factory=Counter)
    first_invalid: list = field(default_factory=list)
    done: bool = False  # max_samples reached: the rest of the source is not read
    fields_seen: list | None = None  # the fields of the first record that lacked one its format reads
    ignored: Counter = field(default_factory=Counter)  # fields smoldist does not read -> valid records holding them
    system_prompts: list = field(default_factory=list)  # the first distinct system prompts (None: the template's)

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "valid": self.valid,
            "not_selected": self.skipped_by_selection,
            "invalid": dict(self.invalid),
            "first_invalid": self.first_invalid,
            "ignored": dict(self.ignored),
        }


@dataclass
class RawBatch:
    """Consecutive records of one source, as read: JSONL lines as bytes (`path` set), else records with positions."""

    source: int
    first: int  # the source-wide index of the first record: the seeded `fraction` choice depends on it
    positions: list  # line numbers when `path` is set, else position strings
    records: list
    path: str | None = None

    def position(self, i: int) -> str:
        return f"{self.path}:{self.positions[i]}" if self.path is not None else self.positions[i]


@dataclass
class Converted:
    """What became of each record of a RawBatch: an outcome code each, why the invalid ones were, the documents."""

    outcomes: np.ndarray  # int8: NOT_SELECTED | VALID | INVALID, one per record
    invalid: list  # (record number in the batch, reason, detail)
    docs: list
    ignored: list = field(default_factory=list)  # (record number in the batch, fields it holds that are not read)
    systems: list = field(default_factory=list)  # (record number, its system prompt or None) of each conversation


def selected(index: int, fraction: float | None, seed: int, source_no: int) -> bool:
    """Seeded, order-independent choice of ~fraction of the records."""
    if fraction is None or fraction >= 1.0:
        return True
    h = hashlib.blake2b(f"{seed}:{source_no}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < fraction


def read_batches(
    sources: list[ResolvedSource], counts: list[SourceCounts], batch_size: int | None = None
) -> Iterator[RawBatch]:
    """Every source cut into RawBatches, in order; a source whose `max_samples` is met is not read further."""
    for si, src in enumerate(sources):
        key, first = f"data.sources.{si}", 0
        for positions, records, path in _raw_chunks(src, key, batch_size or BATCH):
            if counts[si].done:
                break
            yield RawBatch(si, first, positions, records, path)
            first += len(records)


def _raw_chunks(src: ResolvedSource, key: str, size: int) -> Iterator[tuple[list, list, str | None]]:
    if src.kind == "files" and all(f.endswith(".jsonl") for f in src.files):
        for path in src.files:  # lines stay bytes: the workers decode and parse them
            for linenos, texts in _chunks(jsonl_lines(path), size):
                yield linenos, texts, path
        return
    for positions, records in _chunks(iter_records(src, key), size):
        yield positions, records, None


def _chunks(pairs: Iterator[tuple[Any, Any]], size: int) -> Iterator[tuple[list, list]]:
    """(positions, records) lists of up to `size` from (position, record) pairs."""
    positions, records = [], []
    for pos, record in pairs:
        positions.append(pos), records.append(record)
        if len(records) == size:
            yield positions, records
            positions, records = [], []
    if records:
        yield positions, records


class BatchConverter:
    """RawBatch -> Converted, where the work is (a worker process); holds what each source's records need."""

    def __init__(
        self, sources: list[ResolvedSource], seed: int, loss_on: str, check=None, converters: dict | None = None
    ):
        self.specs = [s.spec for s in sources]
        self.read = [read_fields(s) for s in self.specs]
        self.seed, self.loss_on = seed, loss_on
        self.check = check  # a document check that needs the template (templates/tools.py), raising InvalidRecord
        self.converters = converters or CONVERTERS  # data/preference.py passes its own for preference pairs

    def __call__(self, batch: RawBatch) -> Converted:
        spec = self.specs[batch.source]
        convert = self.converters[spec.format]
        outcomes = np.full(len(batch.records), VALID, dtype=np.int8)
        invalid, docs, ignored, systems = [], [], [], []
        for i, record in enumerate(batch.records):
            if not selected(batch.first + i, spec.fraction, self.seed, batch.source):
                outcomes[i] = NOT_SELECTED
                continue
            try:
                if batch.path is not None:
                    record = parse_line(record)
                if isinstance(record, Unreadable):
                    raise InvalidRecord(record.reason, record.why)
                doc = convert(record, spec, self.loss_on)
                if self.check is not None:
                    self.check(doc)
                docs.append(doc)
            except InvalidRecord as e:
                outcomes[i] = INVALID
                invalid.append((i, e.reason, e.detail))
                continue
            read = self.read[batch.source]
            keys = [k for k, v in record.items() if k not in read and v is not None] + list(doc.ignored)
            if keys:
                ignored.append((i, keys))
            if doc.messages is not None:
                first = doc.messages[0]
                systems.append((i, first["content"] if first["role"] == "system" else None))
        return Converted(outcomes, invalid, docs, ignored, systems)


class Tally:
    """Counts per source, applied in source order; says how many of a batch's documents to keep."""

    def __init__(self, sources: list[ResolvedSource], on_invalid: str):
        self.specs = [s.spec for s in sources]
        self.on_invalid = on_invalid
        self.counts = [SourceCounts() for _ in sources]

    def take(self, batch: RawBatch, conv: Converted) -> int:
        """Count the batch's records; returns k: its first k documents are kept (max_samples may cut it)."""
        c, limit = self.counts[batch.source], self.specs[batch.source].max_samples
        if c.done:  # read ahead, in flight, before max_samples was met
            return 0
        outcomes, n = conv.outcomes, len(conv.outcomes)
        if limit is not None:
            valid_at = np.flatnonzero(outcomes == VALID)
            room = limit - c.valid
            if room <= 0:
                c.done = True
                return 0
            if room <= len(valid_at):  # max_samples is met inside this batch: nothing after its last document counts
                n, c.done = int(valid_at[room - 1]) + 1, True
        outcomes = outcomes[:n]
        for i, reason, detail in conv.invalid:
            if i >= n:
                break
            where = batch.position(i)
            if reason == "missing_field" and c.fields_seen is None:
                record = parse_line(batch.records[i]) if batch.path is not None else batch.records[i]
                c.fields_seen = list(record) if isinstance(record, dict) else []
            if self.on_invalid == "error":
                hint = "; ".join(self.format_mismatches())
                raise DataError(
                    f"{where}: invalid record ({reason}): {detail}  "
                    f"[data.sources.{batch.source}, data.on_invalid: error]{'; ' + hint if hint else ''}"
                )
            c.invalid[reason] += 1
            if len(c.first_invalid) < SHOW_INVALID:
                c.first_invalid.append(f"{where}: {reason}: {detail}")
        for i, keys in conv.ignored:
            if i < n:
                c.ignored.update(keys)
        for i, prompt in conv.systems:
            if i < n and len(c.system_prompts) < 2 and prompt not in c.system_prompts:
                c.system_prompts.append(prompt)
        kept = int((outcomes == VALID).sum())
        c.read += n
        c.valid += kept
        c.skipped_by_selection += int((outcomes == NOT_SELECTED).sum())
        return kept

    def format_mismatches(self) -> list[str]:
        """A line per source whose records lack the fields its format reads (see converters.format_mismatch)."""
        found = (
            format_mismatch(spec, c.fields_seen, f"data.sources.{i}")
            for i, (spec, c) in enumerate(zip(self.specs, self.counts))
            if c.fields_seen is not None
        )
        return [line for line in found if line]

    def nothing_valid(self, what: str) -> DataError:
        """The error when no source gave a valid record: what each read, why each record was invalid."""
        per_source = [f"data.sources.{i}: {c.read} read, invalid {dict(c.invalid)}" for i, c in enumerate(self.counts)]
        return DataError(f"no valid {what} in any source; " + "; ".join(per_source + self.format_mismatches()))


def iter_documents(
    sources: list[ResolvedSource],
    seed: int,
    loss_on: str,
    tally: Tally,
    check=None,
    converters: dict | None = None,
) -> Iterator[tuple[int, Document, str]]:
    """(source index, document, its position: file:line or index) for every valid record, converted in this process
    (`smoldist preview`)."""
    convert = BatchConverter(sources, seed, loss_on, check, converters)
    for batch in read_batches(sources, tally.counts):
        conv = convert(batch)
        positions = [batch.position(i) for i in np.flatnonzero(conv.outcomes == VALID)]
        for doc, position in zip(conv.docs[: tally.take(batch, conv)], positions):
            yield batch.source, doc, position


def converted(source: ResolvedSource, spec: Any, skipped: Counter, where: str = "--data") -> Iterator[tuple[str, Any]]:
    """(position, document) for each record the source's format converts; the others counted in `skipped` by reason
    (the eval readers: gsm8k, your own task)."""
    for position, record in iter_records(source, where):
        if isinstance(record, Unreadable):
            skipped[record.reason] += 1
            continue
        try:
            yield position, CONVERTERS[spec.format](record, spec, "assistant")
        except InvalidRecord as e:
            skipped[e.reason] += 1
