"""Reading records from a source: local .jsonl/.json/.parquet files or globs, a saved dataset dir, or a hub id.

Every record comes with its position (file and line, or index) so that an invalid one can be named.
A line that is not UTF-8 or not JSON is passed on as a `Unreadable` record: the converter step counts it.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smoldist.config import resolve_path
from smoldist.config.paths import LOCAL_SUFFIXES, looks_local
from smoldist.errors import DataError


@dataclass
class Unreadable:
    """A line or item that could not be parsed; carries why, and the reason code it is counted under."""

    why: str
    reason: str = "bad_json"


def parse_line(raw: bytes) -> Any:
    """One JSONL line as a record, or Unreadable: a bad byte or bad JSON loses this line, not the file."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Unreadable(f"not UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line)", "not_utf8")
    try:
        return json.loads(text.removeprefix("\ufeff"))  # a byte-order mark, as some editors write on line 1
    except json.JSONDecodeError as e:
        return Unreadable(f"bad JSON ({e.msg} at column {e.colno})")


@dataclass
class ResolvedSource:
    kind: str  # "files" | "saved" | "hub"
    files: list[str]
    spec: Any  # the SourceConfig


def resolve_source(spec: Any, key: str) -> ResolvedSource:
    """Decide what `spec.path` is, before any work; a missing file fails here with the key that named it."""
    path = os.path.expanduser(resolve_path(spec.path))
    if os.path.isdir(path):
        if (
            os.path.exists(os.path.join(path, "dataset_info.json"))
            or os.path.exists(os.path.join(path, "dataset_dict.json"))
            or os.path.exists(os.path.join(path, "state.json"))
        ):
            return ResolvedSource("saved", [path], spec)
        files = sorted(str(p) for p in Path(path).rglob("*") if p.suffix in LOCAL_SUFFIXES)
        if not files:
            raise DataError(
                f"{key}.path: directory '{spec.path}' holds no {'/'.join(LOCAL_SUFFIXES)} files "
                "and is not a saved dataset"
            )
        return ResolvedSource("files", files, spec)
    if os.path.isfile(path):
        if not path.endswith(LOCAL_SUFFIXES):
            raise DataError(f"{key}.path: '{spec.path}' has an unsupported suffix (use {', '.join(LOCAL_SUFFIXES)})")
        return ResolvedSource("files", [path], spec)
    matches = sorted(f for f in glob.glob(path, recursive=True) if f.endswith(LOCAL_SUFFIXES))
    if matches:
        return ResolvedSource("files", matches, spec)
    if looks_local(spec.path):
        raise DataError(f"{key}.path: no file matches '{spec.path}'")
    return ResolvedSource("hub", [], spec)


# a source's hub-only options: which defaults a local file or a saved dataset leaves them at (saved ones keep splits)
HUB_ONLY = {"name": None, "data_dir": None, "revision": None}
FILES_ONLY_DEFAULTS = {**HUB_ONLY, "split": "train"}


def check_local_options(src: ResolvedSource, key: str) -> None:
    """A recipe option a local source cannot honour (a file has no splits, configs, sub-directories or revisions;
    a saved dataset no configs, sub-directories or revisions) stops here, before any work, naming the key."""
    if src.kind == "hub":
        return
    what = "a local file" if src.kind == "files" else "a saved dataset"
    for option, default in (FILES_ONLY_DEFAULTS if src.kind == "files" else HUB_ONLY).items():
        value = getattr(src.spec, option)
        if value != default:
            raise DataError(
                f"{key}.{option}: {value!r} applies to a hub dataset; '{src.spec.path}' is {what}, read whole "
                f"(remove it, or {key}.{option}={default or 'null'}"
                + ("; one file and source per split" if option == "split" else "")
                + ")"
            )


def jsonl_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of each non-blank line: the one reader of JSONL, so every position names the same line.

    Bytes, not text: each line is decoded on its own (parse_line), so one bad byte costs one line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.isspace():
                yield lineno, raw


def iter_jsonl(path: str) -> Iterator[tuple[str, Any]]:
    for lineno, raw in jsonl_lines(path):
        yield f"{path}:{lineno}", parse_line(raw)


def iter_json(path: str) -> Iterator[tuple[str, Any]]:
    raw = Path(path).read_bytes()
    try:
        data = json.loads(raw.decode("utf-8").removeprefix("\ufeff"))
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); re-save it as UTF-8"
        ) from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} style
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for i, rec in enumerate(data):
        yield f"{path}[{i}]", rec


def iter_parquet(path: str) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    i = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for rec in batch.to_pylist():
            yield f"{path}[{i}]", rec
            i += 1


def iter_dataset(ds: Any, label: str) -> Iterator[tuple[str, Any]]:
    for i, rec in enumerate(ds):
        yield f"{label}[{i}]", rec


def load_saved(path: str, split: str) -> Any:
    import datasets

    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: saved dataset has splits {list(ds)}, not '{split}'")
        ds = ds[split]
    return ds


def load_hub(spec: Any, key: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(
            spec.path, spec.name, data_dir=spec.data_dir, split=spec.split, revision=spec.revision
        )
    except Exception as e:  # noqa: BLE001 - any failure to fetch is the user's to act on
        raise DataError(
            f"{key}.path: '{spec.path}' is not a local file and could not be loaded from the hub: "
            f"{type(e).__name__}: {e}"
        ) from None


def iter_records(src: ResolvedSource, key: str) -> Iterator[tuple[str, Any]]:
    """(position, record) for every record of the source, in file order."""
    if src.kind == "hub":
        yield from iter_dataset(load_hub(src.spec, key), f"{src.spec.path}:{src.spec.split}")
        return
    if src.kind == "saved":
        yield from iter_dataset(load_saved(src.files[0], src.spec.split), src.spec.path)
        return
    readers = {".jsonl": iter_jsonl, ".json": iter_json, ".parquet": iter_parquet}
    for f in src.files:
        yield from readers[Path(f).suffix](f)
