"""Bounded memory for `prepare`: tokens spill to disk as they are encoded, rows are written in chunks.

Encoded documents are appended to two int32 files (ids, labels) in the store's scratch directory;
only one length per document stays in memory, which is all packing needs. Rows are then gathered
from the memory-mapped files a chunk at a time (~2 M tokens), each chunk written as an Arrow
record batch appended to its shard (the `datasets.save_to_disk` layout, written without datasets). Peak
memory is a chunk plus 8 bytes per document, whatever the dataset's size.
"""

from __future__ import annotations

import json
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


FEATURES = {c: {"feature": {"dtype": "int32", "_type": "Value"}, "_type": "LargeList"} for c in ("input_ids", "labels", "seq_lengths")}
SHARD_BYTES = 256 << 20


def shard_bounds(n_rows: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous row ranges, as `datasets.Dataset.shard(contiguous=True)` cuts them."""
    div, mod = divmod(n_rows, num_shards)
    starts = [div * i + min(i, mod) for i in range(num_shards + 1)]
    return list(zip(starts[:-1], starts[1:]))


def write_rows(packed: Packed, doc_offsets: np.ndarray, ids: np.ndarray, labels: np.ndarray, seq_len: int,
               out_dir: Path, num_shards: int | None = None, fingerprint: str = "0" * 16) -> tuple[int, int, int]:
    """All rows of `packed` as a `datasets.save_to_disk` directory, written chunk by chunk straight into its
    shards (no `datasets` import, no second copy). Returns (shards, kept tokens, trained tokens)."""
    import pyarrow as pa

    out_dir.mkdir(parents=True, exist_ok=True)
    n_rows = len(packed.rows)
    est_bytes = 8 * int(packed.segments.length.sum()) + 24 * n_rows
    num_shards = max(1, min(num_shards or min(64, est_bytes // SHARD_BYTES), max(n_rows, 1)))
    schema = pa.schema([(c, pa.large_list(pa.int32())) for c in FEATURES],
                       metadata={"huggingface": json.dumps({"info": {"features": FEATURES}})})
    per_chunk = max(1, CHUNK_TOKENS // seq_len)
    files, kept, trained = [], 0, 0
    for i, (lo, hi) in enumerate(shard_bounds(n_rows, num_shards)):
        name = f"data-{i:05d}-of-{num_shards:05d}.arrow"
        with pa.OSFile(str(out_dir / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as out:
            for start in range(lo, hi, per_chunk):
                table, k, t = arrow_chunk(packed, packed.rows[start:min(hi, start + per_chunk)], doc_offsets, ids, labels)
                out.write_table(table.replace_schema_metadata(schema.metadata))
                kept, trained = kept + k, trained + t
        files.append({"filename": name})
    state = {"_data_files": files, "_fingerprint": fingerprint, "_format_columns": list(FEATURES), "_format_kwargs": {},
             "_format_type": None, "_output_all_columns": False, "_split": None}
    (out_dir / "state.json").write_text(json.dumps(state, indent=2))
    info = {"citation": "", "description": "", "features": FEATURES, "homepage": "", "license": ""}
    (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return num_shards, kept, trained
