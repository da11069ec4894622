"""What the launch asked for, checked against the world a rank finds, before any work: `accelerate launch
--num_processes 2 -m smoldist.train R` without a config starts ONE process on a machine without GPUs (accelerate's
simple launcher), which would train alone and say so only in its start line.
"""

from __future__ import annotations

import os

from smoldist.errors import RecipeError


def accelerate_processes_asked(pid: int | None = None) -> int | None:
    """`--num_processes N` of the `accelerate launch` that started this process (its parent), else None."""
    try:
        with open(f"/proc/{pid or os.getppid()}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:  # not Linux, or the parent is gone
        return None
    if not any("accelerate" in a for a in args[:3]):
        return None
    for i, arg in enumerate(args):
        if arg == "--num_processes" and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
        if arg.startswith("--num_processes=") and arg.split("=", 1)[1].isdigit():
            return int(arg.split("=", 1)[1])
    return None


def check_launched_world(world_size: int, has_gpus: bool) -> None:
    """Refuse a world the launch did not ask for, with the command that starts the one it did."""
    asked = accelerate_processes_asked()
    if asked is None or asked == world_size:
        return
    config = "multi_gpu" if has_gpus else "cpu_ddp"
    raise RecipeError(
        f"accelerate launch --num_processes {asked} started {world_size} process(es): without --config_file "
        f"accelerate picks its launcher from the machine{'' if has_gpus else ' (no GPU: one process)'}; write "
        f"`smoldist train RECIPE --num-processes {asked}`, or `accelerate launch --config_file "
        f"accelerate_configs/{config}.yaml --num_processes {asked} -m smoldist.train RECIPE`"
    )
