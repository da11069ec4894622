"""One rank of tests/distributed/test_dpo_fsdp2.py: DPO's pieces under FSDP2 (torch's fully_shard, gloo, CPU).

1. The reference pass when only rank 0 holds the weights (FSDP2's RAM-efficient loading leaves the others on the
   meta device until prepare broadcasts rank 0's): the key and the log-probs equal one process's.
2. The training loss under fully_shard, grouped as accelerate groups a tied model (each decoder layer, then the root),
   two micro-batches per rank accumulated without sync: DpoTrainer's share of each micro-batch (global_batch_share)
   gives the gradients of the mean DPO loss over all 8 pairs of the global batch, computed unsharded.

torchrun --nproc_per_node 2 tests/distributed/dpo_fsdp2_worker.py OUT_DIR   # OUT_DIR/rank-N.json
"""

import json
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import LlamaConfig, LlamaForCausalLM

from smoldist.distributed.state import DistInfo, sum_over_ranks
from smoldist.eval.dpo_loss import PairCollator, dpo_pair_losses, pair_logps
from smoldist.train.dpo_reference import reference_key, reference_logps, split_logps
from smoldist.train.dpo_trainer import global_batch_share
from tests.helpers import TINY_INIT

CONFIG = LlamaConfig(vocab_size=256, **dict(TINY_INIT, tie_word_embeddings=True))


def build(meta: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    with torch.device("meta" if meta else "cpu"):
        return LlamaForCausalLM(CONFIG)


def pair_rows(n_rows: int, pairs_per_row: int) -> list[dict]:
    """Rows of whole pairs, as a preference store holds them: chosen, rejected, ... with prompts unscored."""
    g = torch.Generator().manual_seed(1)
    rows, pair = [], 0
    for _ in range(n_rows):
        ids, labels, lengths, pair_ids = [], [], [], []
        for _ in range(pairs_per_row):
            prompt = torch.randint(1, 256, (5,), generator=g).tolist()
            for n in (4, 3):  # chosen, rejected
                completion = torch.randint(1, 256, (n,), generator=g).tolist()
                ids += prompt + completion
                labels += [-100] * len(prompt) + completion
                lengths.append(len(prompt) + n)
                pair_ids.append(pair)
            pair += 1
        rows.append({"input_ids": ids, "labels": labels, "seq_lengths": lengths, "pair_ids": pair_ids})
    return rows


dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
info = DistInfo(rank, rank, world, "gloo", "cpu")
out = {"rank": rank, "world": world}
cpu = torch.device("cpu")
try:
    rows = pair_rows(4, 2)
    collate = PairCollator(0)
    # 1. the reference pass with the weights on rank 0 only
    model = build(meta=rank != 0)
    key, _ = reference_key(model, "fp32", "sdpa", info)
    reference, _ = reference_logps(
        model, {"train": rows}, Path(sys.argv[1]) / "store", collate, info, cpu, "fp32", "sdpa"
    )
    if rank == 0:
        alone = split_logps(build(), rows, collate, DistInfo(0, 0, 1, None, "cpu"), cpu, "fp32", [0])
        single_key, _ = reference_key(build(), "fp32", "sdpa", DistInfo(0, 0, 1, None, "cpu"))
        out.update(ref_max_diff=float(np.abs(reference["train"] - alone).max()), key_same=key == single_key)
    out.update(key=key, ref_finite=bool(np.isfinite(reference["train"]).all()))
    # 2. the loss and gradients under fully_shard, against the unsharded mean over the global batch's pairs
    ref = reference["train"] + np.array([0.3, -0.2])  # the policy away from its reference: a real margin
    collate = PairCollator(0, ref)
    whole = build()
    batch = collate(rows)
    policy = pair_logps(whole, batch)
    r = batch["ref_logps"].to(policy.chosen.dtype)
    mean_loss = dpo_pair_losses(policy, r[:, 0], r[:, 1], 0.1, "sigmoid")[0].mean()
    mean_loss.backward()
    model = build()
    mesh = init_device_mesh("cpu", (world,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    mine = [rows[2 * i + rank] for i in range(2)]  # micro-batch i of this rank; the step holds all 4 rows
    step_pairs = sum_over_ranks([float(sum(len(x["pair_ids"]) // 2 for x in mine))])[0]
    shares = 0.0
    for i, row in enumerate(mine):
        model.set_requires_gradient_sync(i == len(mine) - 1)  # accumulate, then reduce (average) on the last
        b = collate([row])
        p = pair_logps(model, b)
        r = b["ref_logps"].to(p.chosen.dtype)
        share = global_batch_share(dpo_pair_losses(p, r[:, 0], r[:, 1], 0.1, "sigmoid")[0], world, step_pairs)
        share.backward()
        shares += float(share.detach())
    diffs = {}
    for (name, p), q in zip(model.named_parameters(), whole.parameters()):
        grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        diffs[name] = (grad - q.grad).abs().max().item()
    logged = sum_over_ranks([shares])[0] / world  # what the trainer logs: the ranks' mean of their summed shares
    out.update(
        ok=True,
        sharded=type(model.model.layers[0].mlp.up_proj.weight).__name__,
        max_grad_diff=max(diffs.values()),
        loss=logged,
        mean_loss=float(mean_loss),
    )
except Exception as e:  # noqa: BLE001 - the mechanism under test: record what FSDP2 raised
    out.update(ok=False, error=f"{type(e).__name__}: {e}"[:500], trace=traceback.format_exc()[-1500:])
Path(sys.argv[1], f"rank-{rank}.json").write_text(json.dumps(out))
dist.destroy_process_group()
