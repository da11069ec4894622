"""Packer properties (hypothesis) and padding-free isolation through TRL's own collator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smoldist.data.packing import gather_rows, pack, pack_bfd, tighten
from tests.helpers import as_row, collate, documents, tiny_model


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 90), min_size=1, max_size=60),
    seq_len=st.integers(8, 64),
    packing=st.sampled_from(["bfd", "wrapped", "none"]),
    overflow=st.sampled_from(["split", "truncate", "drop"]),
)
def test_every_kept_token_appears_once_in_order(lengths, seq_len, packing, overflow):
    lengths = np.array(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    packed, stats = pack(lengths, seq_len, packing, overflow)
    positions, row_offsets, seg_lens = gather_rows(packed, offsets)
    rows = np.diff(row_offsets)
    assert (rows <= seq_len).all() and (rows > 0).all()
    assert len(np.unique(positions)) == len(positions)  # no token twice
    # which tokens each policy keeps
    keep = {
        d: (n if overflow == "split" or n <= seq_len else (seq_len if overflow == "truncate" else 0))
        for d, n in enumerate(lengths)
    }
    expected = sorted(int(offsets[d] + i) for d, n in keep.items() for i in range(n))
    assert sorted(positions.tolist()) == expected
    assert stats.tokens_lost == int(lengths.sum()) - len(expected)
    over = lengths > seq_len
    assert stats.docs_over_seq_len == int(over.sum())
    assert stats.docs_split == (int(over.sum()) if overflow == "split" else 0)
    assert stats.docs_dropped == (int(over.sum()) if overflow == "drop" else 0)
    assert stats.docs_truncated == (int(over.sum()) if overflow == "truncate" else 0)
    # inside each segment the tokens run in document order
    starts = np.cumsum(seg_lens) - seg_lens
    for s, n in zip(starts.tolist(), seg_lens.tolist()):
        assert (np.diff(positions[s : s + n]) == 1).all()
    # a split document's chunks, in order of their start, tile it without gaps
    segs = packed.segments
    for d in range(len(lengths)):
        mine = sorted(zip(segs.start[segs.doc == d].tolist(), segs.length[segs.doc == d].tolist()))
        pos = 0
        for start, n in mine:
            assert start == pos
            pos += n
        assert pos == keep[d] or (keep[d] == 0 and pos == 0)
    # segments per row sum to the row
    assert seg_lens.sum() == row_offsets[-1]


def test_bfd_fills_rows_tightly():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 600, size=5000)
    packed, _ = pack(lengths, 2048, "bfd", "split")
    fill = lengths.sum() / (len(packed.rows) * 2048)
    assert fill > 0.995


def test_tighten_brings_bfd_rows_close_to_the_bound():
    # lengths from a few hundred values, as real corpora repeat lengths: BFD alone opens rows of equal
    # segments whose gap fits nothing left (0.33% over the bound here)
    rng = np.random.default_rng(1)
    lengths = rng.choice(rng.integers(60, 1100, size=300), size=20000)
    bound = -(-int(lengths.sum()) // 2048)
    bfd = pack_bfd(lengths, 2048)
    packed, _ = pack(lengths, 2048, "bfd", "truncate")
    assert len(bfd) / bound - 1 > 0.003
    assert len(packed.rows) / bound - 1 < 0.0025
    assert sorted(s for r in packed.rows for s in r) == list(range(len(lengths)))
    assert max(int(lengths[r].sum()) for r in packed.rows) <= 2048


def test_tighten_keeps_rows_it_cannot_improve():
    rows = [[0, 1], [2]]
    assert tighten(rows, np.array([5, 5, 3]), 10) is rows  # 13 tokens need 2 rows of 10 anyway


# ---- padding-free isolation, through the collator TRL uses in training


@pytest.fixture(autouse=True)
def static_flex_compile():
    # transformers compiles flex_attention; torch 2.13's CPU codegen fails on the dynamic-shape recompile
    # ("cur_qSplitSize2 was not declared"): compile each length statically instead
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False, recompile_limit=64):
        yield


# varlen on CPU: the same cu_seqlens through SDPA per document (the CUDA kernel: tests/model/test_gpu.py);
# flex_attention: forward only (no backward on CPU)
@pytest.mark.parametrize("attn", ["sdpa", "eager", "varlen", "flex_attention"])
def test_packed_loss_equals_token_weighted_loss_of_documents(attn):
    model = tiny_model(attn)
    docs = documents()
    with torch.no_grad():
        packed = model(**collate([as_row(docs[:3]), as_row(docs[3:])]), use_cache=False).loss
        total, count = 0.0, 0
        for ids, labels in docs:
            n = sum(1 for t in labels[1:] if t != -100)
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]), use_cache=False)
            total, count = total + out.loss.item() * n, count + n
    assert packed.item() == pytest.approx(total / count, rel=1e-5)
    assert torch.isfinite(packed)


@pytest.mark.parametrize("attn", ["sdpa", "varlen", "flex_attention"])
def test_changing_one_document_leaves_the_others_logits_unchanged(attn):
    model = tiny_model(attn)
    docs = documents(seed=1, n=4)
    changed = list(docs)
    ids, labels = changed[1]
    changed[1] = ([(t + 7) % 64 for t in ids], labels)
    with torch.no_grad():
        a = model(**{k: v for k, v in collate([as_row(docs)]).items() if k != "labels"}, use_cache=False).logits[0]
        b = model(**{k: v for k, v in collate([as_row(changed)]).items() if k != "labels"}, use_cache=False).logits[0]
    bounds = np.cumsum([0] + [len(i) for i, _ in docs])
    for d in range(4):
        same = torch.allclose(a[bounds[d] : bounds[d + 1]], b[bounds[d] : bounds[d + 1]], atol=1e-6)
        assert same == (d != 1), d
