"""Read an offline W&B run file (`offline-run-*/run-<id>.wandb`) without network: history, summary, config.

    python -m smoldist.train.wandb_offline runs/demo/wandb/offline-run-*/run-*.wandb

The file is a 7-byte header (`:W&B`, uint16 0xBEE1, uint8 version), then 32 KiB blocks of
records, each `crc32 (uint32) | length (uint16) | type (uint8: 1 full, 2 first, 3 middle, 4 last)`
followed by its payload; payloads are `wandb_internal_pb2.Record` protobufs. wandb 0.31 ships no
reader for it, so smoldist keeps this one for its tests and for people checking a run offline.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    path: Path
    run_id: str | None = None
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    record_counts: dict = field(default_factory=dict)


def records(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B" or struct.unpack("<H", data[4:6])[0] != 0xBEE1:
        raise ValueError("not a W&B run file (bad header)")
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # too little room for a record header: the rest of the block is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        payload = data[pos + 7 : pos + 7 + length]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad record checksum at byte {pos}")
        pos += 7 + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload
            pending = b""


def _items(updates) -> Iterator[tuple[str, object]]:
    for it in updates:
        yield (it.key or "/".join(it.nested_key)), json.loads(it.value_json)


def read_run(path: str | Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    run = OfflineRun(Path(path))
    for raw in records(Path(path).read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        run.record_counts[kind] = run.record_counts.get(kind, 0) + 1
        if kind == "run":
            run.run_id = rec.run.run_id
            run.config.update(_items(rec.run.config.update))
        elif kind == "history":
            run.history.append(dict(_items(rec.history.item)))
        elif kind == "summary":
            run.summary.update(_items(rec.summary.update))
        elif kind == "config":
            run.config.update(_items(rec.config.update))
    return run


def main(argv: list[str]) -> None:
    for path in argv:
        run = read_run(path)
        steps = [h.get("train/global_step") for h in run.history if "train/loss" in h]
        print(
            f"{path}: run {run.run_id}, {len(run.history)} history rows, train/loss at steps {steps}, "
            f"{len(run.config)} config keys, records {run.record_counts}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
