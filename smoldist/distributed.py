"""Distributed state in one place: rank, world size and main-process checks (nothing else reads rank env vars)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    backend: str | None
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@lru_cache(maxsize=4)
def dist_info(cpu: bool | None = None, timeout_s: float | None = None) -> DistInfo:
    """The world as accelerate sees it (initialises the process group when launched distributed).

    `cpu` must match the trainer's `use_cpu`: on a GPU-less machine PartialState() without cpu=True
    reports a 1-process world even inside a 2-process launch. `timeout_s` (train.ddp_timeout) is the
    group's collective timeout: the first PartialState creates the group, and accelerate (and so the
    Trainer) never re-creates it, so without it here NCCL's 10 minutes / gloo's 30 apply whatever
    ddp_timeout says."""
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    if cpu is None:
        cpu = not torch.cuda.is_available()
    s = PartialState(cpu=cpu, **({"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}))
    return DistInfo(s.process_index, s.local_process_index, s.num_processes, s.backend, str(s.device))


def process_group_timeout() -> float | None:
    """Seconds the default process group waits in a collective (None outside a distributed run)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = dist.distributed_c10d._get_default_group()
    device = torch.device("cuda" if dist.get_backend() == "nccl" else "cpu")
    try:
        return group._get_backend(device).options._timeout.total_seconds()
    except (AttributeError, RuntimeError):  # a backend without options (private API: best effort, for the rank report)
        return None


def under_launcher() -> bool:
    """True when a launcher (torchrun/accelerate/deepspeed) or Slurm started this process and watches its exit status."""
    import os

    return any(k in os.environ for k in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_PROCID"))


def print0(*args, **kwargs) -> None:
    if dist_info().is_main:
        print(*args, **kwargs, flush=True)


EXPECTED_WORLD_ENV = "SMOLDIST_EXPECTED_WORLD_SIZE"  # set by smoldist's launchers and slurm scripts


def check_world(info: DistInfo, expected: int | None) -> None:
    """Fail fast when the world is not what the launcher promised (e.g. N independent 1-process copies)."""
    if expected is not None and info.world_size != expected:
        from smoldist.errors import SmoldistError

        raise SmoldistError(
            f"rank {info.rank}: world size is {info.world_size} but the launch promised {expected} "
            f"({EXPECTED_WORLD_ENV}); the processes did not join one job (check --num_processes/--num_machines, "
            f"the accelerate config, MASTER_ADDR/PORT); refusing to train {info.world_size}-process copies"
        )


PROBE_TOKENS = 16  # a fixed input whose logits, written per rank, must match the saved model's


def final_fingerprint(model) -> tuple[str, list[float]]:
    """sha256 over every parameter's full value, and logits of a fixed probe input.

    Every rank must call it: under ZeRO-3 parameters are gathered, and under FSDP2 (torch fully_shard)
    each DTensor's shards are all-gathered with `full_tensor()` (collectives), so every rank hashes the
    whole model, as an unsharded run would; the probe's forward unshards through FSDP's own hooks."""
    import contextlib
    import hashlib

    import torch

    params = list(model.parameters())
    gather = contextlib.nullcontext()
    if any(hasattr(p, "ds_id") for p in params):  # ZeRO-3 partitions parameters: gather them (collective)
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    h = hashlib.sha256()
    was_training = model.training
    with gather, torch.no_grad():
        for name, p in model.named_parameters():
            h.update(name.encode())
            t = p.detach()
            if hasattr(t, "full_tensor"):  # a DTensor shard (FSDP2): gather the full parameter
                t = t.full_tensor()
            h.update(t.to(torch.float32).cpu().contiguous().numpy().tobytes())
        model.eval()
        ids = torch.arange(1, PROBE_TOKENS + 1, device=params[0].device).unsqueeze(0) % model.config.vocab_size
        logits = model(input_ids=ids, use_cache=False).logits[0, :, :4].float().flatten().tolist()
    model.train(was_training)
    return h.hexdigest(), logits


def write_rank_report(output_dir: str, info: DistInfo, model, engine: str, extra: dict | None = None) -> dict:
    """Each rank writes what it saw, so that a run can be shown to have been one distributed job."""
    import json
    import socket
    from pathlib import Path

    checksum, probe = final_fingerprint(model)
    report = {"rank": info.rank, "local_rank": info.local_rank, "world_size": info.world_size, "backend": info.backend,
              "engine": engine, "pg_timeout_s": process_group_timeout(), "host": socket.gethostname(),
              "param_sha256": checksum, "probe_logits": probe, **(extra or {})}
    path = Path(output_dir) / "ranks"
    path.mkdir(parents=True, exist_ok=True)
    (path / f"rank-{info.rank}.json").write_text(json.dumps(report))
    return report
