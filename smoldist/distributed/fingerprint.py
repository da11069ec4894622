"""Fingerprints of a trained model, the same whatever engine sharded it: a sha256 over every parameter's full
value, and the logits of a fixed probe input, written per rank so a run can be shown to have been one job.

Every rank must call these: ZeRO-3 partitions are gathered (`full_parameters`) and FSDP2's DTensor shards
are all-gathered with `full_tensor()`, both collectives, so every rank hashes the whole model as an unsharded
run would. The frozen-weight checksum of a LoRA run (model/lora.py) is hashed the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from smoldist.distributed.state import DistInfo, process_group_timeout

PROBE_TOKENS = 16  # a fixed input whose logits, written per rank, must match the saved model's


@contextlib.contextmanager
def full_parameters(params: list) -> Iterator[None]:
    """Inside the block every parameter is whole: ZeRO-3 partitions are gathered (a collective)."""
    if not any(hasattr(p, "ds_id") for p in params):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def hash_parameters(named: Iterable[tuple[str, object]]) -> str:
    """sha256 over each (name, fp32 value), in the order given; call it inside `full_parameters`."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in named:
            h.update(name.encode())
            t = p.detach()
            if hasattr(t, "full_tensor"):  # a DTensor shard (FSDP2): gather the full parameter
                t = t.full_tensor()
            h.update(t.to(torch.float32).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def final_fingerprint(model) -> tuple[str, list[float]]:
    """sha256 over every parameter's full value, and logits of a fixed probe input (every rank calls it).

    The probe's forward runs with the parameters gathered under ZeRO-3, and unshards through FSDP's own hooks."""
    import torch

    params = list(model.parameters())
    was_training = model.training
    with full_parameters(params), torch.no_grad():
        checksum = hash_parameters(model.named_parameters())
        model.eval()
        ids = torch.arange(1, PROBE_TOKENS + 1, device=params[0].device).unsqueeze(0) % model.config.vocab_size
        logits = model(input_ids=ids, use_cache=False).logits[0, :, :4].float().flatten().tolist()
    model.train(was_training)
    return checksum, logits


def write_rank_report(output_dir: str, info: DistInfo, model, engine: str, extra: dict | None = None) -> dict:
    """Each rank writes what it saw, so that a run can be shown to have been one distributed job."""
    checksum, probe = final_fingerprint(model)
    report = {
        "rank": info.rank,
        "local_rank": info.local_rank,
        "world_size": info.world_size,
        "backend": info.backend,
        "engine": engine,
        "pg_timeout_s": process_group_timeout(),
        "host": socket.gethostname(),
        "param_sha256": checksum,
        "probe_logits": probe,
        **(extra or {}),
    }
    path = Path(output_dir) / "ranks"
    path.mkdir(parents=True, exist_ok=True)
    (path / f"rank-{info.rank}.json").write_text(json.dumps(report))
    return report
