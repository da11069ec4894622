"""Checkpoints a run can trust: only one that every rank finished writing is resumed from.

transformers writes a checkpoint in place; smoldist marks it `COMPLETE` (with the step and the world size
that wrote it) after every rank has saved its part, and resumes only from marked ones, so an interrupted
save is never picked up; older checkpoints are rotated away only after the new one is marked, and a save that
would not fit on its filesystem is refused by name (docs/reliability.md). A checkpoint from another world size
restores each rank's RNG from the file its rank saved, where that rank existed (distributed/elastic.py resumes
the rest).
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

from smoldist import faults

COMPLETE = "COMPLETE"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(checkpoint: str | Path, step: int, world_size: int) -> None:
    """Written by the main rank once every rank has saved: the step, and the world it was saved on."""
    (Path(checkpoint) / COMPLETE).write_text(json.dumps({"step": step, "world_size": world_size}))


def checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Every `checkpoint-N` folder in output_dir, newest first, complete or not."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    return sorted(
        ((int(m.group(1)), p) for p in root.iterdir() if (m := _CHECKPOINT_RE.match(p.name)) and p.is_dir()),
        reverse=True,
    )


def checkpoint_step(checkpoint: str | Path) -> int:
    return int(_CHECKPOINT_RE.match(Path(checkpoint).name).group(1))


def last_complete_checkpoint(output_dir: str, before: int | None = None) -> str | None:
    """The newest checkpoint every rank finished writing (older than step `before` if given); unmarked ones (an
    interrupted save) are skipped."""
    for step, path in checkpoints(output_dir):
        if (before is None or step < before) and (path / COMPLETE).is_file():
            return str(path)
    return None


def rotate_checkpoints(output_dir: str | Path, limit: int | None, keep: str | None = None) -> list[Path]:
    """Keep the newest `limit` complete checkpoints (and `keep`, the best one); delete every older checkpoint.

    Run after the newest checkpoint is marked COMPLETE: transformers rotates inside the save, before the marker,
    and with a limit of 1 it deleted the only complete checkpoint while the new one could still be cut short."""
    found = checkpoints(output_dir)
    complete = [path for _, path in found if (path / COMPLETE).is_file()]
    if not limit or limit <= 0 or not complete:
        return []
    kept = set(complete[:limit]) | ({Path(keep)} if keep else set())
    oldest_kept = checkpoint_step(complete[min(limit, len(complete)) - 1])
    doomed = [path for step, path in found if step < oldest_kept and path not in kept]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def directory_bytes(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def free_bytes(path: str | Path, measured: bool = False) -> int:
    """Free bytes on the filesystem that holds `path` (its nearest existing parent); `measured`: never the fault
    switch's number."""
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    fake = None if measured else faults.count(faults.FREE_BYTES)  # a full disk, for tests
    return fake if fake is not None else shutil.disk_usage(path).free


def out_of_space(error: Exception, path: str | Path, needed: int) -> bool:
    """Whether a failed write ran out of space: torch reports ENOSPC as an iostream error without an errno."""
    return (
        getattr(error, "errno", None) == errno.ENOSPC
        or "No space left" in str(error)
        or free_bytes(path, measured=True) < needed
    )


def check_room(output_dir: str | Path, step: int, needed: int) -> str | None:
    """None when checkpoint-`step` fits; else the line that says it does not (path, bytes needed, bytes free)."""
    free = free_bytes(output_dir)
    if needed <= free:
        return None
    resume = last_complete_checkpoint(str(output_dir))
    return (
        f"disk full: checkpoint-{step} needs about {needed:,} bytes in {output_dir} but its filesystem has "
        f"{free:,} bytes free; free space (or set train.save_total_limit, or move train.output_dir) and run "
        f"again to resume from {resume or 'the start (no complete checkpoint yet)'}"
    )


def saved_world(checkpoint: str | Path) -> int | None:
    """The number of processes a checkpoint was saved on (its COMPLETE marker; else its per-rank RNG files)."""
    path = Path(checkpoint)
    try:
        world = json.loads((path / COMPLETE).read_text()).get("world_size")
    except (OSError, ValueError):
        world = None
    if world:
        return int(world)
    per_rank = list(path.glob("rng_state_*.pth"))  # a checkpoint written before the marker recorded the world
    return len(per_rank) or (1 if (path / "rng_state.pth").is_file() else None)


def rng_file(checkpoint: str | Path, rank: int) -> Path | None:
    """This rank's saved RNG state, whichever world size wrote it (1 process writes rng_state.pth)."""
    path = Path(checkpoint)
    names = [f"rng_state_{rank}.pth"] + (["rng_state.pth"] if rank == 0 else [])
    return next((path / n for n in names if (path / n).is_file()), None)


def load_rng_state(checkpoint: str | Path, rank: int) -> bool:
    """Restore python/numpy/torch (and CUDA) RNG from this rank's file; False if the rank did not exist then."""
    import random

    import numpy as np
    import torch
    from transformers.trainer_pt_utils import safe_globals

    path = rng_file(checkpoint, rank)
    if path is None:
        return False
    with safe_globals():
        state = torch.load(path, weights_only=True)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.random.set_rng_state(state["cpu"])
    if torch.cuda.is_available() and "cuda" in state:
        device = torch.cuda.current_device()
        torch.cuda.random.set_rng_state(cuda_state_for(state["cuda"], device), device)
    return True


def cuda_state_for(saved, device_index: int):
    """The saved CUDA RNG state for this process's device: one state (1 process) or, distributed, one per device
    the saving process saw (`get_rng_state_all()`), of which a rank uses its own device's, not GPU 0's."""
    if not isinstance(saved, (list, tuple)):
        return saved
    return saved[device_index] if device_index < len(saved) else saved[0]  # it saw one device only
