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


@lru_cache(maxsize=1)
def dist_info() -> DistInfo:
    """The world as accelerate sees it (initialises the process group when launched distributed)."""
    from accelerate import PartialState

    s = PartialState()
    return DistInfo(s.process_index, s.local_process_index, s.num_processes, s.backend, str(s.device))


def print0(*args, **kwargs) -> None:
    if dist_info().is_main:
        print(*args, **kwargs, flush=True)
