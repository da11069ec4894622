"""Writing a store: packed rows into Arrow shards, in a temporary directory renamed into place when complete.

Rows are gathered from the memory-mapped token buffer (data/encode.py) a chunk at a time (~2 M tokens),
each chunk written as an Arrow record batch appended to its shard (the `datasets.save_to_disk` layout,
written without datasets): peak memory is a chunk, whatever the dataset's size. `StoreWriter.commit`
writes the manifest and renames the directory, so a store appears complete or not at all.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np

from smoldist.data.encode import IGNORE
from smoldist.data.packing import Packed, gather_rows
from smoldist.store.hash_cache import HashCache
from smoldist.store.manifest import FORMAT_VERSION, MANIFEST, SPLITS, shard_checksums, store_dir

CHUNK_TOKENS = 2_000_000


def arrow_chunk(
    packed: Packed,
    rows: list[list[int]],
    doc_offsets: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    per_segment: dict | None = None,
):
    """One Arrow table of `rows`, and its kept / trained token counts; `per_segment` columns hold a value per
    segment (a preference store's `pair_ids`)."""
    import pyarrow as pa

    positions, row_offsets, seg_lens = gather_rows(Packed(packed.segments, rows), doc_offsets)
    row_ids = np.asarray(ids[positions], dtype=np.int32)
    row_labels = np.array(labels[positions], dtype=np.int32)
    seg_starts = np.cumsum(seg_lens) - seg_lens
    row_labels[seg_starts[seg_lens > 0]] = IGNORE  # a chunk of a split document starts a new document
    seg_offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    as_list = lambda offs, vals: pa.LargeListArray.from_arrays(pa.array(offs, pa.int64()), pa.array(vals))  # noqa: E731
    table = pa.table(
        {
            "input_ids": as_list(row_offsets, row_ids),
            "labels": as_list(row_offsets, row_labels),
            "seq_lengths": as_list(seg_offsets, seg_lens.astype(np.int32)),
            **{
                name: as_list(seg_offsets, values[np.fromiter((x for r in rows for x in r), np.int64)].astype(np.int32))
                for name, values in (per_segment or {}).items()
            },
        }
    )
    return table, int(seg_lens.sum()), int((row_labels != IGNORE).sum())


FEATURES = {
    c: {"feature": {"dtype": "int32", "_type": "Value"}, "_type": "LargeList"}
    for c in ("input_ids", "labels", "seq_lengths")
}
SHARD_BYTES = 256 << 20


def shard_bounds(n_rows: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous row ranges, as `datasets.Dataset.shard(contiguous=True)` cuts them."""
    div, mod = divmod(n_rows, num_shards)
    starts = [div * i + min(i, mod) for i in range(num_shards + 1)]
    return list(zip(starts[:-1], starts[1:]))


def write_rows(
    packed: Packed,
    doc_offsets: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    seq_len: int,
    out_dir: Path,
    num_shards: int | None = None,
    fingerprint: str = "0" * 16,
    per_segment: dict | None = None,
) -> tuple[int, int, int]:
    """All rows of `packed` as a `datasets.save_to_disk` directory, written chunk by chunk straight into its
    shards (no `datasets` import, no second copy). Returns (shards, kept tokens, trained tokens)."""
    import pyarrow as pa

    features = {**FEATURES, **dict.fromkeys(per_segment or {}, FEATURES["seq_lengths"])}
    out_dir.mkdir(parents=True, exist_ok=True)
    n_rows = len(packed.rows)
    est_bytes = 8 * int(packed.segments.length.sum()) + 24 * n_rows
    num_shards = max(1, min(num_shards or min(64, est_bytes // SHARD_BYTES), max(n_rows, 1)))
    schema = pa.schema(
        [(c, pa.large_list(pa.int32())) for c in features],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )
    per_chunk = max(1, CHUNK_TOKENS // seq_len)
    files, kept, trained = [], 0, 0
    for i, (lo, hi) in enumerate(shard_bounds(n_rows, num_shards)):
        name = f"data-{i:05d}-of-{num_shards:05d}.arrow"
        with pa.OSFile(str(out_dir / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as out:
            for start in range(lo, hi, per_chunk):
                table, k, t = arrow_chunk(
                    packed, packed.rows[start : min(hi, start + per_chunk)], doc_offsets, ids, labels, per_segment
                )
                out.write_table(table.replace_schema_metadata(schema.metadata))
                kept, trained = kept + k, trained + t
        files.append({"filename": name})
    state = {
        "_data_files": files,
        "_fingerprint": fingerprint,
        "_format_columns": list(features),
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (out_dir / "state.json").write_text(json.dumps(state, indent=2))
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return num_shards, kept, trained


class StoreWriter:
    """Collects a store in `<root>/.tmp-<key>-<host>-<pid>` and renames it into place on `commit()`.

    Host and pid: two nodes sharing the root can have the same pid."""

    def __init__(self, root: str | Path, key: str):
        self.root, self.key = Path(root), key
        self.final = store_dir(root, key)
        self.tmp = self.root / f".tmp-{key}-{socket.gethostname()}-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)

    @property
    def scratch(self) -> Path:
        """Working files (token buffers, row chunks); removed before the store is committed."""
        return self.tmp / ".scratch"

    def write_split(self, name: str, write):
        """`write(directory)` fills the split's directory (write_rows); returns what it returns."""
        return write(self.tmp / name)

    def commit(self, manifest: dict, force: bool = False, hashes: HashCache | None = None) -> Path:
        shutil.rmtree(self.scratch, ignore_errors=True)
        manifest = dict(
            manifest, key=self.key, format_version=FORMAT_VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%S")
        )
        manifest["shards"] = {s: shard_checksums(self.tmp / s, hashes) for s in SPLITS if (self.tmp / s).is_dir()}
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        if self.final.exists():
            if not force:  # another process finished the same key first: identical contents, keep theirs
                shutil.rmtree(self.tmp)
                return self.final
            trash = self.root / f".old-{self.key}-{os.getpid()}"
            os.rename(self.final, trash)
            shutil.rmtree(trash)
        try:
            os.rename(self.tmp, self.final)  # atomic on one filesystem: the store appears complete or not at all
        except OSError as e:  # lost a race: another builder renamed the same key into place first
            if force or e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (self.final / MANIFEST).is_file():
                raise
            shutil.rmtree(self.tmp)  # same key, same contents: keep the winner's
            return self.final
        if hashes is not None:
            hashes.moved(self.tmp, self.final)  # the shards were just hashed: training's verification is a stat each
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
