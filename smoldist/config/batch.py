"""The global batch in tokens and the processes that share it: one rule for `train` (at run time) and `submit`
(before anything is queued).

    gradient_accumulation(65536, per_device_rows=8, seq_len=1024, world_size=4)   # -> 2
"""

from __future__ import annotations

from smoldist.errors import RecipeError

DEFAULT_DEVICE_ROWS = 8  # trl.SFTConfig's per_device_train_batch_size when the recipe leaves it out


def device_rows(train: dict) -> int:
    return train.get("per_device_train_batch_size", DEFAULT_DEVICE_ROWS)


def working_world_sizes(global_batch_tokens: int, per_device_rows: int, seq_len: int) -> list[int]:
    """World sizes whose gradient accumulation is a whole number for this global batch."""
    row_tokens = per_device_rows * seq_len
    if global_batch_tokens % row_tokens:
        return []
    micro = global_batch_tokens // row_tokens  # micro-batches per optimiser step: processes x accumulation
    return [w for w in range(1, micro + 1) if micro % w == 0]


def gradient_accumulation(global_batch_tokens: int | None, per_device_rows: int, seq_len: int, world_size: int) -> int:
    """Accumulation steps that make one optimiser step see `global_batch_tokens` at this world size."""
    if global_batch_tokens is None:
        return 1
    micro = per_device_rows * seq_len * world_size
    if global_batch_tokens % micro:
        fits = working_world_sizes(global_batch_tokens, per_device_rows, seq_len)
        counts = f"process counts that work: {', '.join(map(str, fits))}" if fits else "no process count works"
        raise RecipeError(
            f"train.global_batch_tokens: {global_batch_tokens} is not a multiple of "
            f"per_device_train_batch_size x seq_len x world size = {per_device_rows} x {seq_len} x {world_size} = "
            f"{micro}; {counts}, or pick a multiple of {micro}"
        )
    return global_batch_tokens // micro


def check_world_sizes(train: dict, seq_len: int, worlds: dict[int, str]) -> None:
    """Refuse before any work when a world the job may run on cannot split the global batch; `worlds` maps each
    process count to how the job gets it (e.g. '4 nodes x 8 GPUs')."""
    gbt = train.get("global_batch_tokens")
    for world, how in worlds.items():
        try:
            gradient_accumulation(gbt, device_rows(train), seq_len, world)
        except RecipeError as e:
            raise RecipeError(f"{world} processes ({how}) cannot split the global batch: {e}") from None
