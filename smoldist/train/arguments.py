"""The trl.SFTConfig of a run: TRL must not re-template, re-tokenize or re-pack the prepared store.

The recipe's `train` section passes through to SFTConfig (checked against its fields when the recipe
loads); smoldist adds what follows from the other sections: gradient accumulation from the global batch in
tokens and the world size, autocast from `model.dtype` over fp32 weights, and the flags for pre-packed,
padding-free rows.
"""

from __future__ import annotations

import dataclasses

from smoldist.config import Recipe
from smoldist.config.batch import DEFAULT_DEVICE_ROWS, gradient_accumulation


def output_dir_of(recipe: Recipe) -> str:
    """Where the run writes: train.output_dir, else runs/<recipe name> (no torch import: the CLI reads it too)."""
    return recipe.train.get("output_dir") or f"runs/{recipe.name}"


def train_defaults(recipe: Recipe) -> dict:
    """smoldist's defaults for `train` keys that more than one stage reads (one source for both)."""
    import torch

    # without use_cpu, CPU ranks run as independent copies
    return {"output_dir": output_dir_of(recipe), "use_cpu": not torch.cuda.is_available()}


def eval_rows(attn_implementation: str, train_rows: int) -> int:
    """Eval rows per device: one packed row with sdpa/eager (their mask is (rows x seq_len)^2), else as in training."""
    from smoldist.model.attention import DENSE_MASK

    return 1 if attn_implementation in DENSE_MASK else train_rows


def sft_config(recipe: Recipe, world_size: int, report_to: list[str]):
    """The trl.SFTConfig for a pre-packed store: TRL must not re-template, re-tokenize or re-pack."""
    import torch
    from trl import SFTConfig

    from smoldist.model.precision import autocast_flags

    train = {**train_defaults(recipe), **recipe.train}
    gbt = train.pop("global_batch_tokens", None)
    rows = train.setdefault("per_device_train_batch_size", DEFAULT_DEVICE_ROWS)
    train.setdefault("per_device_eval_batch_size", eval_rows(recipe.model.attn_implementation, rows))
    on_gpu = torch.cuda.is_available() and not train["use_cpu"]
    for key, value in autocast_flags(recipe.model.dtype, recipe.model.master_weights, on_gpu).items():
        train.setdefault(key, value)  # autocast to model.dtype over fp32 weights (model/precision.py)
    train.setdefault("report_to", report_to)
    train.setdefault("logging_nan_inf_filter", False)  # True logs a nan loss as the previous average (0 at first)
    train.setdefault("ddp_find_unused_parameters", False)  # every parameter is used; True costs a graph walk per step
    # transformers 5.2x renamed gradient_checkpointing (older 5.x, e.g. 5.17, has only the old name);
    # TRL's default is on
    on = train.pop("gradient_checkpointing", train.pop("activation_checkpointing", True))
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    train["activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"] = on
    return SFTConfig(
        **train,
        gradient_accumulation_steps=gradient_accumulation(gbt, rows, recipe.data.seq_len, world_size),
        max_length=recipe.data.seq_len,
        packing=True,  # rows are packed already; with skip_prepare_dataset this only selects padding-free batches
        packing_strategy="bfd",
        padding_free=True,
        assistant_only_loss=False,  # labels in the store already carry the mask
        dataset_kwargs={"skip_prepare_dataset": True},
    )
