"""Bounded memory for `prepare`: tokens spill to disk as they are encoded, rows are written in chunks.

Encoded documents are appended to two int32 files (ids, labels) in the store's scratch directory;
only one length per document stays in memory, which is all packing needs. Rows are then gathered
from the memory-mapped files a chunk at a time (~2 M tokens), each chunk written as an Arrow
stream file, and the chunks are combined memory-mapped for `save_to_disk`. Peak memory is a
chunk plus 8 bytes per document, whatever the dataset's size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smoldist.encode import IGNORE, EncodedBatch
from smoldist.packing import Packed, gather_rows

CHUNK_TOKENS = 2_000_000


class TokenBuffer:
    """Encoded documents on disk, appended batch by batch."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.ids_path, self.labels_path = folder / "ids.int32", folder / "labels.int32"
        self._ids, self._labels = open(self.ids_path, "wb"), open(self.labels_path, "wb")
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


def arrow_chunk(packed: Packed, rows: list[list[int]], doc_offsets: np.ndarray, ids: np.ndarray, labels: np.ndarray):
    """One Arrow table of `rows`, and its kept / trained token counts."""
    import pyarrow as pa

    positions, row_offsets, seg_lens = gather_rows(Packed(packed.segments, rows), doc_offsets)
    row_ids = np.asarray(ids[positions], dtype=np.int32)
    row_labels = np.array(labels[positions], dtype=np.int32)
    seg_starts = np.cumsum(seg_lens) - seg_lens
    row_labels[seg_starts[seg_lens > 0]] = IGNORE  # a chunk of a split document starts a new document
    seg_offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    as_list = lambda offs, vals: pa.LargeListArray.from_arrays(pa.array(offs, pa.int64()), pa.array(vals))  # noqa: E731
    table = pa.table({
        "input_ids": as_list(row_offsets, row_ids),
        "labels": as_list(row_offsets, row_labels),
        "seq_lengths": as_list(seg_offsets, seg_lens.astype(np.int32)),
    })
    return table, int(seg_lens.sum()), int((row_labels != IGNORE).sum())


def write_rows(packed: Packed, doc_offsets: np.ndarray, ids: np.ndarray, labels: np.ndarray, seq_len: int,
               scratch: Path):
    """All rows of `packed` as one memory-mapped datasets.Dataset, built chunk by chunk; plus token counts."""
    import datasets
    import pyarrow as pa

    scratch.mkdir(parents=True, exist_ok=True)
    per_chunk = max(1, CHUNK_TOKENS // seq_len)
    parts, kept, trained = [], 0, 0
    for i, start in enumerate(range(0, len(packed.rows), per_chunk)):
        table, k, t = arrow_chunk(packed, packed.rows[start:start + per_chunk], doc_offsets, ids, labels)
        path = scratch / f"rows-{i:05d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
            out.write_table(table)
        parts.append(datasets.Dataset.from_file(str(path)))
        kept, trained = kept + k, trained + t
    return datasets.concatenate_datasets(parts), kept, trained
