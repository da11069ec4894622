"""Packing tokenized documents into rows of at most `seq_len` tokens.

A document longer than `seq_len` first meets the overflow policy (split into chunks, truncate, or
drop); every token lost and every document split is counted. Then the pieces ("segments") are
packed: `bfd` best-fit-decreasing over the whole set, then `tighten`ed, `wrapped` concatenated and cut at seq_len
(a segment cut by a row boundary continues as a new segment), `none` one segment per row.
Each row keeps `seq_lengths`, so documents never attend to each other at training time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Segments:
    """Pieces of documents: document index, start offset inside the document, length."""

    doc: np.ndarray
    start: np.ndarray
    length: np.ndarray


@dataclass
class OverflowStats:
    docs_over_seq_len: int = 0
    docs_split: int = 0
    docs_truncated: int = 0
    docs_dropped: int = 0
    tokens_lost: int = 0
    chunks_from_splits: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Packed:
    """Rows as lists of segment indices (into `segments`), in row order."""

    segments: Segments
    rows: list[list[int]] = field(default_factory=list)


def apply_overflow(lengths: np.ndarray, seq_len: int, policy: str) -> tuple[Segments, OverflowStats]:
    """Turn documents into segments of at most seq_len tokens according to the overflow policy."""
    lengths = np.asarray(lengths, dtype=np.int64)
    stats = OverflowStats()
    over = lengths > seq_len
    stats.docs_over_seq_len = int(over.sum())
    docs = np.arange(len(lengths))
    if policy == "drop":
        stats.docs_dropped = int(over.sum())
        stats.tokens_lost = int(lengths[over].sum())
        keep = ~over
        return Segments(docs[keep], np.zeros(int(keep.sum()), np.int64), lengths[keep]), stats
    if policy == "truncate":
        stats.docs_truncated = int(over.sum())
        stats.tokens_lost = int((lengths[over] - seq_len).sum())
        return Segments(docs, np.zeros(len(docs), np.int64), np.minimum(lengths, seq_len)), stats
    if policy != "split":
        raise ValueError(f"unknown overflow policy {policy!r}")
    n_chunks = np.maximum(1, -(-lengths // seq_len))  # ceil, and empty docs keep one (empty) segment
    stats.docs_split = int(over.sum())
    stats.chunks_from_splits = int(n_chunks[over].sum())
    doc = np.repeat(docs, n_chunks)
    first = np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
    k = np.arange(len(doc)) - first  # chunk number inside its document
    start = k * seq_len
    length = np.minimum(seq_len, lengths[doc] - start)
    return Segments(doc, start, length), stats


def pack_bfd(seg_lengths: np.ndarray, seq_len: int) -> list[list[int]]:
    """Best-fit-decreasing: longest segment first, into the open row with the least room that fits it."""
    order = np.argsort(-seg_lengths, kind="stable")
    rows: list[list[int]] = []
    buckets: list[list[int]] = [[] for _ in range(seq_len + 1)]  # free room -> rows with exactly that room
    has = np.zeros(seq_len + 1, dtype=bool)
    for seg in order.tolist():
        need = int(seg_lengths[seg])
        if need == 0:
            continue
        fits = has[need:]
        if fits.any():  # best fit: the smallest room that still holds the segment
            room = int(fits.argmax()) + need
            r = buckets[room].pop()
            has[room] = bool(buckets[room])
            rows[r].append(seg)
            left = room - need
        else:
            rows.append([seg])
            r, left = len(rows) - 1, seq_len - need
        if left > 0:
            buckets[left].append(r)
            has[left] = True
    return rows


# rows drawn into the pool beside each excess row: varied lengths close more gaps
# (bench/prepare.py's corpora: 0.48% over the bound with BFD alone, 0.05% tightened)
POOL_SPREAD = 32
TIGHTEN_PASSES = 8


def tighten(
    rows: list[list[int]], seg_lengths: np.ndarray, seq_len: int, spread: int = POOL_SPREAD, swap_two: bool = False
) -> list[list[int]]:
    """Fewer rows after BFD: passes of `tighten_once` while they save rows."""
    for _ in range(TIGHTEN_PASSES):
        fewer = tighten_once(rows, seg_lengths, seq_len, spread, swap_two)
        if len(fewer) >= len(rows):
            break
        rows = fewer
    return rows


def tighten_once(
    rows: list[list[int]], seg_lengths: np.ndarray, seq_len: int, spread: int = POOL_SPREAD, swap_two: bool = False
) -> list[list[int]]:
    """Empty the least-filled rows (and a spread of others) into a pool, close the other rows' gaps from it, repack
    the rest.

    BFD leaves each row a gap smaller than any segment still to place, ~0.5% of the tokens. A row's gap
    closes by taking a pool segment that fits it, or by swapping one of its segments for a pool segment at
    most `gap` longer (`swap_two`: or for two pool segments, together at most `gap` longer: segments long next to
    a row, as preference pairs are, leave gaps no single segment closes). Every move shrinks the pool; what is left
    is packed by BFD. Kept only if rows are saved."""
    lengths = seg_lengths.tolist()
    used = [sum(lengths[s] for s in r) for r in rows]
    excess = len(rows) - -(-sum(used) // seq_len)
    if excess <= 0:
        return rows
    order = sorted(range(len(rows)), key=used.__getitem__)
    drop = set(order[:excess]) | set(order[excess :: max(1, (len(rows) - excess) // (spread * excess))])
    pool = _Pool(seq_len)
    for r in drop:
        for seg in rows[r]:
            pool.put(seg, lengths[seg])
    kept = [list(rows[r]) for r in range(len(rows)) if r not in drop]
    for row, room in zip(kept, (seq_len - used[r] for r in range(len(rows)) if r not in drop)):
        while room > 0:
            fit = pool.longest_within(1, room)
            if fit:  # a pool segment that fits the gap as it is
                row.append(pool.take(fit))
                room -= fit
                continue
            best = (0, -1, ())  # (gain, position in row, pool lengths)
            for i, seg in enumerate(row):
                la = lengths[seg]
                lb = pool.longest_within(la + 1, min(la + room, seq_len))
                if lb and lb - la > best[0]:
                    best = (lb - la, i, (lb,))
                two = pool.best_two(la + best[0], la + room) if swap_two else ()
                if two:
                    best = (sum(two) - la, i, two)
            gain, i, taken = best
            if not gain:
                break
            pool.put(row[i], lengths[row[i]])
            row[i : i + 1] = [pool.take(n) for n in taken]
            room -= gain
    rest = pool.segments()
    rest_rows = pack_bfd(np.asarray([lengths[s] for s in rest], dtype=np.int64), seq_len) if rest else []
    out = kept + [[rest[j] for j in r] for r in rest_rows]
    return out if len(out) < len(rows) else rows


class _Pool:
    """Segments waiting for a row, by length, with the longest within a length range found fast."""

    def __init__(self, seq_len: int):
        self.by_len: dict[int, list[int]] = {}
        self.has = np.zeros(seq_len + 1, dtype=bool)
        self.count = np.zeros(seq_len + 1, dtype=np.int64)

    def put(self, seg: int, length: int) -> None:
        self.by_len.setdefault(length, []).append(seg)
        self.has[length] = True
        self.count[length] += 1

    def take(self, length: int) -> int:
        segs = self.by_len[length]
        seg = segs.pop()
        self.count[length] -= 1
        if not segs:
            del self.by_len[length]
            self.has[length] = False
        return seg

    def longest_within(self, lo: int, hi: int) -> int:
        """The greatest length in [lo, hi] held by some segment, or 0."""
        window = self.has[lo : hi + 1]
        return lo + len(window) - 1 - int(window[::-1].argmax()) if window.any() else 0

    def best_two(self, lo: int, hi: int) -> tuple[int, int] | tuple:
        """Two segments' lengths (b >= c) with lo < b + c <= hi, the greatest sum, or ()."""
        held = np.flatnonzero(self.has[: hi + 1])
        b = held[2 * held > lo]
        if not len(b):
            return ()
        at = np.searchsorted(held, np.minimum(hi - b, b), side="right") - 1
        at -= (at >= 0) & (held[np.maximum(at, 0)] == b) & (self.count[b] < 2)  # b twice: two segments of b
        c = np.where(at >= 0, held[np.maximum(at, 0)], 0)
        sums = np.where((c > 0) & (b + c > lo), b + c, 0)
        k = int(sums.argmax())
        return (int(b[k]), int(c[k])) if sums[k] else ()

    def segments(self) -> list[int]:
        return [s for segs in self.by_len.values() for s in segs]


def pack_wrapped(segs: Segments, seq_len: int) -> tuple[Segments, list[list[int]]]:
    """Concatenate segments in order and cut every seq_len tokens; a cut segment becomes two."""
    doc, start, length = [], [], []
    rows: list[list[int]] = [[]]
    used = 0
    for d, s, n in zip(segs.doc.tolist(), segs.start.tolist(), segs.length.tolist()):
        while n > 0:
            if used == seq_len:
                rows.append([])
                used = 0
            take = min(n, seq_len - used)
            rows[-1].append(len(doc))
            doc.append(d), start.append(s), length.append(take)
            s, n, used = s + take, n - take, used + take
    rows = [r for r in rows if r]
    as_arr = lambda xs: np.asarray(xs, dtype=np.int64)  # noqa: E731
    return Segments(as_arr(doc), as_arr(start), as_arr(length)), rows


def pack(lengths: np.ndarray, seq_len: int, packing: str, overflow: str) -> tuple[Packed, OverflowStats]:
    segs, stats = apply_overflow(lengths, seq_len, overflow)
    if packing == "bfd":
        return Packed(segs, tighten(pack_bfd(segs.length, seq_len), segs.length, seq_len)), stats
    if packing == "wrapped":
        segs, rows = pack_wrapped(segs, seq_len)
        return Packed(segs, rows), stats
    if packing == "none":
        return Packed(segs, [[i] for i in range(len(segs.length)) if segs.length[i] > 0]), stats
    raise ValueError(f"unknown packing {packing!r}")


def gather_rows(packed: Packed, doc_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token positions (into the flat document buffer) in row order, row offsets, and seq_lengths flat.

    Returns (positions, row_offsets, segment_lengths_in_row_order); row i holds positions
    positions[row_offsets[i]:row_offsets[i+1]].
    """
    segs = packed.segments
    order = np.fromiter((s for r in packed.rows for s in r), dtype=np.int64)
    seg_len = segs.length[order]
    seg_begin = doc_offsets[segs.doc[order]] + segs.start[order]
    total = int(seg_len.sum())
    # positions = concat(arange(b, b+n) for b, n): one vectorised pass
    seg_first = np.cumsum(seg_len) - seg_len
    positions = np.arange(total, dtype=np.int64) - np.repeat(seg_first - seg_begin, seg_len)
    row_tokens = np.array([int(segs.length[r].sum()) for r in packed.rows], dtype=np.int64)
    row_offsets = np.concatenate([[0], np.cumsum(row_tokens)])
    return positions, row_offsets, seg_len
