"""The preference store: pairs read, converted and encoded by the workers, packed two sequences to a pair, written.

`store/build.py` runs it for a recipe whose sources are `format: preference` (method dpo): the same plan, lock,
writer and manifest as an SFT store, with pairs in place of documents. Rows carry a `pair_ids` column (the pair of
each document) beside `input_ids`, `labels` and `seq_lengths`; chosen and rejected of a pair are consecutive
documents of one row. The manifest's split stats add pairs, pairs per row and the pair overflow counts.
"""

from __future__ import annotations

import hashlib
import sys
import time
from array import array

import numpy as np

from smoldist.config import DataConfig
from smoldist.data.encode import Encoder, TokenBuffer
from smoldist.data.pair_packing import pack_pairs
from smoldist.data.preference import CONVERTERS, EncodedPairs, PairEncoder
from smoldist.data.records import INVALID, VALID, BatchConverter, Converted, RawBatch, Tally, read_batches
from smoldist.data.worker_pool import ordered_map
from smoldist.store.plan import StorePlan
from smoldist.store.writer import StoreWriter, write_rows


def is_preference(data: DataConfig) -> bool:
    return any(s.format == "preference" for s in data.sources)


class PairWork:
    """What a worker does with a batch of raw records: convert them to pairs, encode the valid ones; a pair found
    invalid while encoding becomes an invalid record of the batch (counted by reason like the others)."""

    def __init__(self, convert: BatchConverter, encoder: PairEncoder):
        self.convert, self.encoder = convert, encoder

    def __call__(self, batch: RawBatch) -> tuple[Converted, EncodedPairs]:
        conv = self.convert(batch)
        encoded = self.encoder.encode(conv.docs)
        if encoded.invalid:
            valid_at = np.flatnonzero(conv.outcomes == VALID)
            for j, reason, detail in encoded.invalid:
                conv.outcomes[valid_at[j]] = INVALID
                conv.invalid.append((int(valid_at[j]), reason, detail))
            conv.invalid.sort(key=lambda x: x[0])
            encoded.invalid = []
        conv.docs = []
        return conv, encoded


def tokenize_pairs(plan: StorePlan, data: DataConfig, num_proc: int, writer: StoreWriter, verbose: bool):
    """Every pair read, converted and encoded into the writer's scratch space. Returns (ids, labels) memory-mapped,
    each document's length (chosen, rejected, ...), each pair's prompt length and source, and the per-source counts."""
    from tqdm import tqdm

    tally = Tally(plan.sources, data.on_invalid)
    encoder = Encoder.for_template(plan.tok, plan.template, data.loss_on)
    work = PairWork(BatchConverter(plan.sources, data.seed, data.loss_on, converters=CONVERTERS), PairEncoder(encoder))
    buffer = TokenBuffer(writer.scratch / "tokens")
    prompt_lens, pair_source = [], array("i")
    with tqdm(desc="tokenize", unit=" pairs", disable=not verbose, file=sys.stderr) as bar:
        for batch, (conv, encoded) in ordered_map(work, read_batches(plan.sources, tally.counts), num_proc):
            kept = tally.take(batch, conv)
            if kept:
                head = encoded.head(kept)
                buffer.append(head)
                prompt_lens.append(head.prompt_lens)
                pair_source.extend(array("i", [batch.source]) * kept)
                bar.update(kept)
    ids, labels, lengths = buffer.close()
    if not len(lengths):
        raise tally.nothing_valid("preference pairs")
    return ids, labels, lengths, np.concatenate(prompt_lens), pair_source, tally.counts


def build_pair_split(
    name: str,
    pairs: np.ndarray,
    lengths: np.ndarray,
    prompt_lens: np.ndarray,
    offsets: np.ndarray,
    ids,
    labels,
    data: DataConfig,
    writer: StoreWriter,
) -> dict:
    """Pack the pairs `pairs` (indices into all pairs) and write their rows into split `name`; returns its stats."""
    t = time.perf_counter()
    docs = np.stack([2 * pairs, 2 * pairs + 1], axis=1).reshape(-1)
    packed, seg_pairs, overflow = pack_pairs(lengths[docs], prompt_lens[pairs], data.seq_len, data.overflow)
    t_pack = time.perf_counter() - t
    fingerprint = hashlib.blake2b(f"{writer.key}:{name}".encode(), digest_size=8).hexdigest()
    pair_ids = pairs[seg_pairs]  # the store-wide pair index of each segment: reference log-probs are keyed by it
    shards, kept, trained = writer.write_split(
        name,
        lambda d: write_rows(
            packed, offsets[docs], ids, labels, data.seq_len, d, data.num_shards, fingerprint, {"pair_ids": pair_ids}
        ),
    )
    n_rows, n_pairs = len(packed.rows), len(seg_pairs) // 2
    return {
        "documents": 2 * n_pairs,
        "pairs": n_pairs,
        "rows": n_rows,
        "pairs_per_row": n_pairs / n_rows if n_rows else 0.0,
        "tokens": kept,
        "trained_tokens": trained,
        "fill": kept / (n_rows * data.seq_len) if n_rows else 0.0,
        "rows_lower_bound": -(-kept // data.seq_len),
        "shards": shards,
        "pack_seconds": round(t_pack, 3),
        "overflow": overflow.as_dict(),
    }
