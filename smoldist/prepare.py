"""`smoldist prepare`: sources -> convert + validate -> template + tokenize + mask -> pack -> store.

    smoldist prepare                                   # the bundled demo recipe
    smoldist prepare launch/smollm2-135m/gsm8k.yaml data.seq_len=4096
    python -m smoldist.prepare RECIPE [overrides] [--force]

Receives the model and data sections only. Reuses the store when its key exists.
"""

from __future__ import annotations

import hashlib
import os
from array import array
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from smoldist.config import DataConfig, ModelConfig, resolve_path
from smoldist.converters import CONVERTERS, Document, InvalidRecord
from smoldist.encode import Encoder, encode_stream
from smoldist.errors import DataError
from smoldist.hash_cache import HashCache
from smoldist.packing import pack
from smoldist.rows import TokenBuffer, write_rows
from smoldist.sources import ResolvedSource, Unreadable, iter_records, resolve_source
from smoldist.store import StoreWriter, compute_key, store_dir, verify_store
from smoldist.store_lock import build_turn
from smoldist.templates import check_template, load_template
from smoldist.templates.render import make_renderer
from smoldist.tokenizer import PrepTokenizer, load_prep_tokenizer

BATCH = 1000
SHOW_INVALID = 5


@dataclass
class SourceCounts:
    read: int = 0
    valid: int = 0
    skipped_by_selection: int = 0
    invalid: Counter = field(default_factory=Counter)
    first_invalid: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"read": self.read, "valid": self.valid, "not_selected": self.skipped_by_selection,
                "invalid": dict(self.invalid), "first_invalid": self.first_invalid}


@dataclass
class PrepareResult:
    path: Path
    manifest: dict
    reused: bool
    template: str  # the exact chat template the store was built with


def chat_template_for(model: ModelConfig, data: DataConfig) -> str:
    template = load_template(resolve_path(model.chat_template), model.default_system_prompt)
    if any(s.format != "text" for s in data.sources):
        check_template(template, model.chat_template, data.loss_on)
    return template


def store_key_inputs(data: DataConfig, sources: list[ResolvedSource], tok_hash: str, template: str,
                     hashes: HashCache | None = None) -> dict:
    """Everything that changes the tokens, and nothing else (learning rate, shards, num_proc stay out)."""
    converter_keys = ("format", "messages_field", "role_field", "content_field", "prompt_field", "completion_field",
                      "text_field", "columns", "system_prompt", "prefix", "max_samples", "fraction")
    return {
        "sources": [{"identity": s.identity(hashes), "converter": {k: getattr(s.spec, k) for k in converter_keys}} for s in sources],
        "tokenizer_sha256": tok_hash,
        "chat_template": template,
        "seq_len": data.seq_len, "packing": data.packing, "overflow": data.overflow, "loss_on": data.loss_on,
        "eval_fraction": data.eval_fraction, "seed": data.seed,
    }


def make_encoder(tok: PrepTokenizer, template: str, loss_on: str) -> Encoder:
    return Encoder(tok.backend, make_renderer(template, tok.special_tokens), loss_on, tok.eos_token_id)


def selected(index: int, fraction: float | None, seed: int, source_no: int) -> bool:
    """Seeded, order-independent choice of ~fraction of the records."""
    if fraction is None or fraction >= 1.0:
        return True
    h = hashlib.blake2b(f"{seed}:{source_no}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < fraction


def iter_documents(sources: list[ResolvedSource], data: DataConfig, counts: list[SourceCounts],
                   doc_source) -> Iterator[list[Document]]:
    """Batches of valid documents; invalid records counted (or raised with their position)."""
    batch: list[Document] = []
    for si, src in enumerate(sources):
        key, spec, c = f"data.sources.{si}", src.spec, counts[si]
        convert = CONVERTERS[spec.format]
        for pos, record in iter_records(src, key):
            if spec.max_samples is not None and c.valid >= spec.max_samples:
                break
            c.read += 1
            if not selected(c.read - 1, spec.fraction, data.seed, si):
                c.skipped_by_selection += 1
                continue
            try:
                if isinstance(record, Unreadable):
                    raise InvalidRecord("bad_json", record.why)
                doc = convert(record, spec, data.loss_on)
            except InvalidRecord as e:
                if data.on_invalid == "error":
                    raise DataError(f"{pos}: invalid record ({e.reason}): {e.detail}  [{key}, data.on_invalid: error]") from None
                c.invalid[e.reason] += 1
                if len(c.first_invalid) < SHOW_INVALID:
                    c.first_invalid.append(f"{pos}: {e.reason}: {e.detail}")
                continue
            c.valid += 1
            doc_source.append(si)
            batch.append(doc)
            if len(batch) == BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def split_documents(n_docs: int, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if eval_fraction <= 0 or n_docs < 2:
        return np.arange(n_docs), np.zeros(0, dtype=np.int64)
    n_eval = min(n_docs - 1, max(1, round(eval_fraction * n_docs)))
    perm = np.random.default_rng(seed).permutation(n_docs)
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])


def build_split(name: str, docs: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, ids, labels, data: DataConfig,
                writer: StoreWriter) -> dict:
    """Pack the documents `docs` and write their rows into the store's split `name`; returns its stats."""
    t = time.perf_counter()
    packed, overflow = pack(lengths[docs], data.seq_len, data.packing, data.overflow)
    t_pack = time.perf_counter() - t
    fingerprint = hashlib.blake2b(f"{writer.key}:{name}".encode(), digest_size=8).hexdigest()
    shards, kept, trained = writer.write_split(name, lambda d: write_rows(
        packed, offsets[docs], ids, labels, data.seq_len, d, data.num_shards, fingerprint))
    n_rows = len(packed.rows)
    return {
        "documents": int(len(docs)), "rows": n_rows, "tokens": kept, "trained_tokens": trained,
        "fill": kept / (n_rows * data.seq_len) if n_rows else 0.0,
        "rows_lower_bound": -(-kept // data.seq_len), "shards": shards, "pack_seconds": round(t_pack, 3),
        "overflow": overflow.as_dict(),
    }
def available_cpus() -> int:
    """CPUs this process may run on (a Slurm job's allocation, taskset), not the node's total.

    SLURM_CPUS_PER_TASK caps it: clusters without CPU binding (task/none) leave the affinity at the whole node."""
    try:
        n = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return min(n, int(os.environ.get("SLURM_CPUS_PER_TASK") or n))


@dataclass
class StorePlan:
    """Where the store for a recipe lives, and everything its key was computed from."""

    sources: list[ResolvedSource]
    tok: PrepTokenizer
    template: str
    inputs: dict
    key: str
    path: Path
    hashes: HashCache  # sha256s by stat, in the store root: unchanged sources and shards are not read again


def plan_store(model: ModelConfig, data: DataConfig) -> StorePlan:
    """Resolve sources, tokenizer and template, and compute the key, without building anything."""
    sources = [resolve_source(s, f"data.sources.{i}") for i, s in enumerate(data.sources)]
    tok = load_prep_tokenizer(model)
    template = chat_template_for(model, data)
    hashes = HashCache.for_store(data.store)
    inputs = store_key_inputs(data, sources, tok.fingerprint, template, hashes)
    hashes.save()
    key = compute_key(inputs)
    return StorePlan(sources, tok, template, inputs, key, store_dir(data.store, key), hashes)


def prepare(model: ModelConfig, data: DataConfig, force: bool = False, verbose: bool = True,
            verify_shards: bool = True) -> PrepareResult:
    """Make sure the store for (model, data) exists; build it if not. Returns where it is.

    `verify_shards=False` skips re-hashing the shards of an existing store (ranks other than the main
    one, which has just verified them)."""
    t0 = time.perf_counter()
    plan = plan_store(model, data)
    path = plan.path
    if path.exists() and not force:
        return _reuse(plan, t0, verbose, verify_shards)
    with build_turn(Path(data.store), plan.key, path, force=force, verbose=verbose) as appeared:
        if appeared:  # another process (rank, node, prepare job) built it while we waited
            return _reuse(plan, t0, verbose, verify_shards)
        return _build(plan, model, data, force, verbose, t0)


def _reuse(plan: StorePlan, t0: float, verbose: bool, verify_shards: bool) -> PrepareResult:
    manifest = verify_store(plan.path, plan.key, check_shards=verify_shards, hashes=plan.hashes)
    plan.hashes.save()
    if verbose:
        print(f"smoldist prepare: reusing store {plan.path} ({time.perf_counter() - t0:.2f} s)")
    return PrepareResult(plan.path, manifest, reused=True, template=plan.template)


def _build(plan: StorePlan, model: ModelConfig, data: DataConfig, force: bool, verbose: bool, t0: float) -> PrepareResult:
    """Build the store; the caller holds the build lock, so this is the one process of the job doing it."""
    sources, tok, template, inputs, key, path = plan.sources, plan.tok, plan.template, plan.inputs, plan.key, plan.path
    print(f"smoldist prepare: building store {path} ({len(sources)} source(s))", flush=True)
    num_proc = data.num_proc or available_cpus()
    encoder = make_encoder(tok, template, data.loss_on)
    counts = [SourceCounts() for _ in sources]
    doc_source = array("i")
    from tqdm import tqdm

    writer = StoreWriter(data.store, key)
    try:
        buffer = TokenBuffer(writer.scratch / "tokens")  # tokens go to disk as they come: memory stays bounded
        with tqdm(desc="tokenize", unit=" docs", disable=not verbose, file=sys.stderr) as bar:
            for enc in encode_stream(encoder, iter_documents(sources, data, counts, doc_source), num_proc):
                buffer.append(enc)
                bar.update(len(enc.lengths))
        ids, labels, lengths = buffer.close()
        if not len(lengths):
            raise DataError("no valid records in any source; " + "; ".join(
                f"data.sources.{i}: {c.read} read, invalid {dict(c.invalid)}" for i, c in enumerate(counts)))
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        t_tok = time.perf_counter() - t0
        splits = {}
        for name, docs in zip(("train", "eval"), split_documents(len(lengths), data.eval_fraction, data.seed)):
            if len(docs) == 0:
                continue
            splits[name] = build_split(name, docs, lengths, offsets, ids, labels, data, writer)
        source_arr = np.asarray(doc_source)
        manifest = {
            "inputs": inputs,
            "recipe": {"model": {"tokenizer": model.tokenizer or model.name_or_path, "chat_template": model.chat_template},
                       "data": {k: v for k, v in data.__dict__.items() if k != "sources"}},
            "counts": {
                "records_read": sum(c.read for c in counts),
                "records_valid": sum(c.valid for c in counts),
                "records_invalid": sum(sum(c.invalid.values()) for c in counts),
                "invalid_by_reason": dict(sum((c.invalid for c in counts), Counter())),
                "documents": int(len(lengths)),
                "tokens": int(lengths.sum()),
                "per_source": [dict(c.as_dict(), path=s.spec.path, documents=int((source_arr == i).sum()),
                                    tokens=int(lengths[source_arr == i].sum())) for i, (c, s) in enumerate(zip(counts, sources))],
            },
            "splits": splits,
            "length_histogram": length_histogram(lengths, data.seq_len),
            "versions": library_versions(),
            "num_proc": num_proc,
            "seconds": {"tokenize": round(t_tok, 3), "total": round(time.perf_counter() - t0, 3)},
        }
        from smoldist.report import write_report

        write_report(writer.tmp, dict(manifest, key=key))
        final = writer.commit(manifest, force=force, hashes=plan.hashes)
        plan.hashes.save()
    except BaseException:
        writer.abort()  # Ctrl-C or a crash leaves no directory that looks complete
        raise
    manifest = verify_store(final, key, check_shards=False)
    if verbose:
        from smoldist.report import print_summary

        print_summary(final, manifest)
    return PrepareResult(final, manifest, reused=False, template=template)


def length_histogram(lengths: np.ndarray, seq_len: int, bins: int = 32) -> dict:
    top = max(int(lengths.max()), seq_len) if len(lengths) else seq_len
    counts, edges = np.histogram(lengths, bins=bins, range=(0, top))
    return {"edges": edges.round(1).tolist(), "counts": counts.tolist(), "seq_len": seq_len,
            "mean": float(lengths.mean()) if len(lengths) else 0.0, "max": int(lengths.max()) if len(lengths) else 0}


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("smoldist", "transformers", "tokenizers", "datasets", "trl", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def main(argv: list[str] | None = None) -> int:
    from smoldist.cli import main as cli_main

    return cli_main(["prepare", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
