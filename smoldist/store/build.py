"""`smoldist prepare`: sources -> convert + validate -> template + tokenize + mask -> pack -> store.

    smoldist prepare                                   # the bundled demo recipe
    smoldist prepare launch/smollm2-135m/gsm8k.yaml data.seq_len=4096 [--force]

Receives the model and data sections only. Reuses the store when its key exists (plan.py); else one
process builds it under a file lock (lock.py), with `data.num_proc` workers converting and encoding.
"""

from __future__ import annotations

import hashlib
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smoldist.config import DataConfig, ModelConfig
from smoldist.data.encode import EncodedBatch, Encoder, TokenBuffer
from smoldist.data.packing import pack
from smoldist.data.records import BatchConverter, Converted, RawBatch, Tally, read_batches
from smoldist.data.sources import ResolvedSource
from smoldist.data.worker_pool import available_cpus, ordered_map
from smoldist.store.lock import build_turn
from smoldist.store.manifest import library_versions, verify_store
from smoldist.store.pair_build import build_pair_split, is_preference, tokenize_pairs
from smoldist.store.plan import StorePlan, plan_store
from smoldist.store.system_prompt import saved_template, system_prompt_summary
from smoldist.store.writer import StoreWriter, write_rows


@dataclass
class PrepareResult:
    path: Path
    manifest: dict
    reused: bool
    template: str  # the chat template the model is saved with: the store's, inserting the one trained system prompt


class PrepareWork:
    """What a worker does with a batch of raw records: convert them, then tokenize the valid ones."""

    def __init__(self, convert: BatchConverter, encoder: Encoder):
        self.convert, self.encoder = convert, encoder

    def __call__(self, batch: RawBatch) -> tuple[Converted, EncodedBatch]:
        conv = self.convert(batch)
        encoded = self.encoder.encode(conv.docs)
        conv.docs = []  # the tokens are what the main process needs back
        return conv, encoded


def split_documents(n_docs: int, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if eval_fraction <= 0 or n_docs < 2:
        return np.arange(n_docs), np.zeros(0, dtype=np.int64)
    n_eval = min(n_docs - 1, max(1, round(eval_fraction * n_docs)))
    perm = np.random.default_rng(seed).permutation(n_docs)
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])


def build_split(
    name: str,
    docs: np.ndarray,
    lengths: np.ndarray,
    offsets: np.ndarray,
    ids,
    labels,
    data: DataConfig,
    writer: StoreWriter,
) -> dict:
    """Pack the documents `docs` and write their rows into the store's split `name`; returns its stats."""
    t = time.perf_counter()
    packed, overflow = pack(lengths[docs], data.seq_len, data.packing, data.overflow)
    t_pack = time.perf_counter() - t
    fingerprint = hashlib.blake2b(f"{writer.key}:{name}".encode(), digest_size=8).hexdigest()
    shards, kept, trained = writer.write_split(
        name, lambda d: write_rows(packed, offsets[docs], ids, labels, data.seq_len, d, data.num_shards, fingerprint)
    )
    n_rows = len(packed.rows)
    return {
        "documents": len(docs),
        "rows": n_rows,
        "tokens": kept,
        "trained_tokens": trained,
        "fill": kept / (n_rows * data.seq_len) if n_rows else 0.0,
        "rows_lower_bound": -(-kept // data.seq_len),
        "shards": shards,
        "pack_seconds": round(t_pack, 3),
        "overflow": overflow.as_dict(),
    }


def prepare(
    model: ModelConfig,
    data: DataConfig,
    force: bool = False,
    verbose: bool = True,
    verify_shards: bool = True,
    plan: StorePlan | None = None,
) -> PrepareResult:
    """Make sure the store for (model, data) exists; build it if not. Returns where it is.

    `verify_shards=False` skips re-hashing the shards of an existing store (ranks other than the main
    one, which has just verified them)."""
    t0 = time.perf_counter()
    plan = plan or plan_store(model, data)  # a caller that checked the key first (train/run.py) passes its plan
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
    return PrepareResult(plan.path, manifest, reused=True, template=saved_template(plan.template, manifest))


def _build(
    plan: StorePlan, model: ModelConfig, data: DataConfig, force: bool, verbose: bool, t0: float
) -> PrepareResult:
    """Build the store; the caller holds the build lock, so this is the one process of the job doing it."""
    from smoldist.store.report import ReportPainter, print_summary, write_report

    print(f"smoldist prepare: building store {plan.path} ({len(plan.sources)} source(s))", flush=True)
    num_proc = data.num_proc or available_cpus()
    writer = StoreWriter(data.store, plan.key)
    try:
        pairs = is_preference(data)  # method dpo: pairs packed two sequences together (store/pair_build.py)
        if pairs:
            ids, labels, lengths, prompt_lens, doc_source, counts = tokenize_pairs(
                plan, data, num_proc, writer, verbose
            )
            long = None  # pairs are truncated or dropped whole (their counts), never cut at turns
        else:
            ids, labels, lengths, doc_source, counts, long = _tokenize(plan, data, num_proc, writer, verbose)
        t_tok = time.perf_counter() - t0
        with ReportPainter() as painter:  # imports matplotlib in another process while this one packs and writes
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            splits = {}
            units = len(lengths) // 2 if pairs else len(lengths)  # a pair is held out whole
            for name, docs in zip(("train", "eval"), split_documents(units, data.eval_fraction, data.seed)):
                if len(docs) and pairs:
                    splits[name] = build_pair_split(
                        name, docs, lengths, prompt_lens, offsets, ids, labels, data, writer
                    )
                elif len(docs):
                    splits[name] = build_split(name, docs, lengths, offsets, ids, labels, data, writer)
            if pairs:  # counted and drawn per pair: a pair's two sequences share a row
                lengths = lengths[0::2] + lengths[1::2]
            manifest = {
                "inputs": plan.inputs,
                "recipe": {
                    "model": {"tokenizer": model.tokenizer or model.name_or_path, "chat_template": model.chat_template},
                    "data": {k: v for k, v in data.__dict__.items() if k != "sources"},
                },
                "counts": dict(
                    count_summary(counts, plan.sources, lengths, np.asarray(doc_source)),
                    long_conversations=long,
                    system_prompt=system_prompt_summary(counts),
                ),
                "splits": splits,
                "length_histogram": length_histogram(lengths, data.seq_len),
                "versions": library_versions(),
                "num_proc": num_proc,
                "seconds": {"tokenize": round(t_tok, 3), "total": round(time.perf_counter() - t0, 3)},
            }
            write_report(writer.tmp, dict(manifest, key=plan.key), painter)
        final = writer.commit(manifest, force=force, hashes=plan.hashes)
        plan.hashes.save()
    except BaseException:
        writer.abort()  # Ctrl-C or a crash leaves no directory that looks complete
        raise
    manifest = verify_store(final, plan.key, check_shards=False)
    if verbose:
        print_summary(final, manifest)
    return PrepareResult(final, manifest, reused=False, template=saved_template(plan.template, manifest))


def _tokenize(plan: StorePlan, data: DataConfig, num_proc: int, writer: StoreWriter, verbose: bool):
    """Every source read, converted and tokenized (by `num_proc` workers) into the writer's scratch space.

    Returns (ids, labels) memory-mapped, each document's length and source, and the per-source counts."""
    from tqdm import tqdm

    tally = Tally(plan.sources, data.on_invalid)
    work = PrepareWork(
        BatchConverter(plan.sources, data.seed, data.loss_on, plan.tool_support),
        Encoder.for_template(plan.tok, plan.template, data.loss_on, data.seq_len, data.overflow),
    )
    cut = LongConversations()
    buffer = TokenBuffer(writer.scratch / "tokens")  # tokens go to disk as they come: memory stays bounded
    doc_source = array("i")
    with tqdm(desc="tokenize", unit=" docs", disable=not verbose, file=sys.stderr) as bar:
        for batch, (conv, encoded) in ordered_map(work, read_batches(plan.sources, tally.counts), num_proc):
            kept = tally.take(batch, conv)  # in source order: counts, max_samples, on_invalid: error
            if kept:
                head = encoded.head(kept)
                buffer.append(head)
                doc_source.extend(array("i", [batch.source]) * len(head.lengths))
                cut.add(head.cuts)
                bar.update(kept)
    ids, labels, lengths = buffer.close()
    if not len(lengths):
        raise tally.nothing_valid("records")
    return ids, labels, lengths, doc_source, tally.counts, cut.as_dict()


@dataclass
class LongConversations:
    """Conversations over seq_len, cut at their turns (data/turn_split.py): how many, and how."""

    over_seq_len: int = 0
    split: int = 0  # became more than one piece
    pieces: int = 0
    context_trimmed: int = 0  # pieces whose oldest context turns were left out
    turns_dropped: int = 0  # trained turns that did not fit with their own prompt
    dropped: int = 0  # conversations none of whose turns fit

    def add(self, cuts: list) -> None:
        for _, c in cuts:
            self.over_seq_len += 1
            self.split += c.pieces > 1
            self.pieces += c.pieces
            self.context_trimmed += c.trimmed
            self.turns_dropped += c.turns_dropped
            self.dropped += c.pieces == 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def count_summary(counts: list, sources: list[ResolvedSource], lengths: np.ndarray, doc_source: np.ndarray) -> dict:
    """The manifest's `counts`: records read, valid and invalid (by reason), documents and tokens, per source."""
    return {
        "records_read": sum(c.read for c in counts),
        "records_valid": sum(c.valid for c in counts),
        "records_invalid": sum(sum(c.invalid.values()) for c in counts),
        "invalid_by_reason": dict(sum((c.invalid for c in counts), Counter())),
        "documents": len(lengths),
        "tokens": int(lengths.sum()),
        "per_source": [
            dict(
                c.as_dict(),
                path=s.spec.path,
                documents=int((doc_source == i).sum()),
                tokens=int(lengths[doc_source == i].sum()),
            )
            for i, (c, s) in enumerate(zip(counts, sources))
        ],
    }


def length_histogram(lengths: np.ndarray, seq_len: int, bins: int = 32) -> dict:
    top = max(int(lengths.max()), seq_len) if len(lengths) else seq_len
    counts, edges = np.histogram(lengths, bins=bins, range=(0, top))
    return {
        "edges": edges.round(1).tolist(),
        "counts": counts.tolist(),
        "seq_len": seq_len,
        "mean": float(lengths.mean()) if len(lengths) else 0.0,
        "max": int(lengths.max()) if len(lengths) else 0,
    }
