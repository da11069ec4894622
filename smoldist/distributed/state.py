"""Distributed state in one place: rank, world size, main-process checks, the collectives every rank joins,
and which engine and devices this process has (nothing else reads rank env vars)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from smoldist.errors import SmoldistError


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
    device = torch.device(collective_device(dist.get_backend()))
    try:
        return group._get_backend(device).options._timeout.total_seconds()
    except (AttributeError, RuntimeError):  # a backend without options (private API: best effort, for the rank report)
        return None


def collective_device(backend: str | None) -> str:
    """Where a collective's tensors must live: on the GPU when the group has NCCL, also in a mixed backend such as
    accelerate's FSDP FULL_STATE_DICT group "cuda:nccl,cpu:gloo" (which is not == "nccl")."""
    return "cuda" if backend and "nccl" in str(backend) else "cpu"


def under_launcher() -> bool:
    """True when a launcher (torchrun/accelerate/deepspeed) or Slurm started this process and watches its exit
    status."""
    return any(k in os.environ for k in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_PROCID"))


def print0(*args, **kwargs) -> None:
    if dist_info().is_main:
        print(*args, **kwargs, flush=True)


EXPECTED_WORLD_ENV = "SMOLDIST_EXPECTED_WORLD_SIZE"  # set by smoldist's launchers and slurm scripts


def check_world(info: DistInfo, expected: int | None) -> None:
    """Fail fast when the world is not what the launcher promised (e.g. N independent 1-process copies)."""
    if expected is not None and info.world_size != expected:
        raise SmoldistError(
            f"rank {info.rank}: world size is {info.world_size} but the launch promised {expected} "
            f"({EXPECTED_WORLD_ENV}); the processes did not join one job (check --num_processes/--num_machines, "
            f"the accelerate config, MASTER_ADDR/PORT); refusing to train {info.world_size}-process copies"
        )


def any_rank(flag: bool) -> bool:
    """True on every rank if any rank's flag is (ranks may see a signal at slightly different times)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=collective_device(dist.get_backend()))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def max_over_ranks(values: list[float]) -> list[float]:
    """Each value's maximum over all ranks (one all-reduce; every rank must call it at the same point)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=collective_device(dist.get_backend()))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def sum_over_ranks(values: list[float]) -> list[float]:
    """Each value's sum over all ranks (one all-reduce; every rank must call it at the same point)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=collective_device(dist.get_backend()))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def engine_name(accelerator_state) -> str:
    """What actually ran: 'ddp', 'deepspeed-zero3', 'fsdp2', 'single' (recorded per rank)."""
    kind = str(accelerator_state.distributed_type).split(".")[-1].lower()
    if kind == "deepspeed":
        return f"deepspeed-zero{accelerator_state.deepspeed_plugin.zero_stage}"
    if kind == "fsdp":
        return f"fsdp{getattr(accelerator_state.fsdp_plugin, 'fsdp_version', 1)}"
    return {"multi_gpu": "ddp", "multi_cpu": "ddp", "no": "single"}.get(kind, kind)


def count_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch CUDA: no GPUs
        return 0


def tell_deepspeed_no_gpu(env) -> None:
    """On a machine without a GPU, set DS_ACCELERATOR=cpu in `env` (unless set): DeepSpeed's auto-detection would
    warn in every process that it found no GPU. The launcher sets it for its children, the trainer for its own rank;
    never written into --dry-run lines, which run on GPU nodes."""
    if "DS_ACCELERATOR" not in env and count_gpus() == 0:
        env["DS_ACCELERATOR"] = "cpu"
