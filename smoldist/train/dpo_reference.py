"""The reference log-probs of a DPO run: computed once, before the first step, and kept in the store for reuse.

The reference is the model as loaded, before any step (full fine-tuning: the policy's starting weights; LoRA: the
base, before the adapter is added). One pass
over every row of the train and eval splits, rows sharded over the ranks, gives each pair's summed completion
log-probs (chosen, rejected); they are written into the store beside the rows under a key naming the reference
weights (sha256 of every parameter) and the dtype the pass ran in:

    <store>/<key>/reference/<sha256 of weights + dtype + attention>/{train,eval}.npy    # [pairs, 2] float64

A later run on the same store and reference (a beta or learning-rate sweep, a requeue, another world size, another
engine) reads them. One line says which happened. No reference model stays in memory: training reads the arrays.

The pass runs before the engine wraps the model, on whole weights whatever the engine: ZeRO-3's zero.Init partitions
are gathered for it (the whole model on each rank, once), and ranks that hold no weights yet (FSDP2's RAM-efficient
loading leaves them on the meta device until rank 0's are broadcast) score nothing: the others share their rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from smoldist.distributed.fingerprint import full_parameters, hash_parameters
from smoldist.distributed.state import DistInfo, barrier, print0


def holds_weights(model) -> bool:
    """False on a rank whose parameters are still on the meta device (FSDP2 RAM-efficient loading, not rank 0)."""
    return not any(p.is_meta for p in model.parameters())


def scoring_ranks(model, dist: DistInfo) -> list[int]:
    """The ranks that hold the model's weights (every rank calls this: an all-gather)."""
    if dist.world_size == 1:
        return [0]
    import torch.distributed as tdist

    seen = [None] * dist.world_size
    tdist.all_gather_object(seen, holds_weights(model))
    return [r for r, holds in enumerate(seen) if holds]


def reference_key(model, autocast: str, attn_implementation: str, dist: DistInfo) -> tuple[str, dict]:
    """(folder name, what it names): the weights' sha256, the dtype of the pass and the attention it ran with. Every
    rank calls it (ZeRO-3 gathers the partitions); a rank without weights takes the first scoring rank's key."""
    scorers = scoring_ranks(model, dist)
    weights = None
    with full_parameters(list(model.parameters())):
        if dist.rank in scorers:
            weights = hash_parameters(model.named_parameters())
    if len(scorers) < dist.world_size:
        import torch.distributed as tdist

        sent = [weights]
        tdist.broadcast_object_list(sent, src=scorers[0])
        weights = sent[0]
    named = {"weights_sha256": weights, "dtype": autocast, "attention": attn_implementation}
    return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:20], named


def split_logps(model, rows, collate, dist: DistInfo, device, autocast: str, scorers: list[int]) -> np.ndarray:
    """[pairs in the store, 2] (chosen, rejected) for the pairs of `rows`; NaN for pairs of other splits. The
    scoring ranks share the rows (the i-th of them scores rows i, i + n, ...); all ranks receive all."""
    import torch
    import torch.distributed as tdist

    from smoldist.eval.dpo_loss import pair_logps

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast)
    found: list = []
    was_training = model.training
    model.eval()
    mine = range(scorers.index(dist.rank), len(rows), len(scorers)) if dist.rank in scorers else range(0)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for i in mine:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in collate([rows[i]]).items()}
            lp = pair_logps(model, batch)
            found.append(
                (batch["pair_ids"].cpu().numpy(), lp.chosen.double().cpu().numpy(), lp.rejected.double().cpu().numpy())
            )
    model.train(was_training)
    parts = [found]
    if dist.world_size > 1:
        parts = [None] * dist.world_size
        tdist.all_gather_object(parts, found)
    size = 1 + max((int(p.max()) for part in parts for p, _, _ in part if len(p)), default=-1)
    out = np.full((size, 2), np.nan)
    for part in parts:
        for pairs, chosen, rejected in part:
            out[pairs, 0], out[pairs, 1] = chosen, rejected
    return out


def reference_logps(
    model, splits: dict, store_path: Path, collate, dist: DistInfo, device, autocast: str, attn: str
) -> tuple[dict[str, np.ndarray], Path]:
    """(each split's reference log-probs, the store folder holding them): read from the store when this reference
    computed them before, else computed now (sharded over the ranks) and written there by the main process."""
    key, named = reference_key(model, autocast, attn, dist)
    folder = Path(store_path) / "reference" / key
    if all((folder / f"{name}.npy").is_file() for name in splits):
        print0(f"smoldist train: reference log-probs reused from {folder} ({named['dtype']})")
        return {name: np.load(folder / f"{name}.npy") for name in splits}, folder
    t0 = time.perf_counter()
    scorers = scoring_ranks(model, dist)
    if dist.rank in scorers:
        model.to(device)
    with full_parameters(list(model.parameters())):  # ZeRO-3: whole weights on every rank for the pass
        out = {
            name: split_logps(model, rows, collate, dist, device, autocast, scorers) for name, rows in splits.items()
        }
    seconds = time.perf_counter() - t0
    if dist.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        for name, logps in out.items():
            tmp = folder / f".{name}.{os.getpid()}.npy"
            np.save(tmp, logps)
            os.replace(tmp, folder / f"{name}.npy")  # a reader sees a whole file or none
        (folder / "reference.json").write_text(json.dumps({**named, "seconds": round(seconds, 3)}, indent=2))
    barrier()
    tokens = sum(sum(len(r["input_ids"]) for r in rows) for rows in splits.values())
    pairs = sum(int(np.isfinite(v[:, 0]).sum()) for v in out.values())
    print0(
        f"smoldist train: reference log-probs computed for {pairs:,} pairs in {seconds:.1f} s "
        f"({tokens / max(seconds, 1e-9):,.0f} tokens/s, {len(scorers)} rank(s), "
        f"{named['dtype']}) -> {folder}"
    )
    return out, folder
