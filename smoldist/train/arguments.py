"""The trl.SFTConfig of a run: TRL must not re-template, re-tokenize or re-pack the prepared store.

The recipe's `train` section passes through to SFTConfig (its honoured keys: config/sft_keys.py, checked when the
recipe loads); smoldist adds what follows from the other sections: gradient accumulation from the global batch in
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


def launch_precision(recipe: Recipe, on_gpu: bool) -> str:
    """The `--mixed_precision` a launcher must pass for this recipe ('bf16', 'fp16' or 'no')."""
    from smoldist.model.precision import mixed_precision

    return mixed_precision(recipe.model.dtype, recipe.model.master_weights, recipe.train, on_gpu)


def check_launch_precision_of(recipe: Recipe) -> None:
    """Refuse, before any work, a launch whose accelerate config asks for autocast the recipe does not."""
    import os

    import torch

    from smoldist.model.precision import check_launch_precision

    on_gpu = torch.cuda.is_available() and not {**train_defaults(recipe), **recipe.train}["use_cpu"]
    check_launch_precision(
        launch_precision(recipe, on_gpu), os.environ.get("ACCELERATE_MIXED_PRECISION"), recipe.model.dtype
    )


def device_type_of(recipe: Recipe) -> str:
    """'cuda' where this run trains on a GPU, else 'cpu' (train.use_cpu, or no GPU here)."""
    import torch

    return "cuda" if torch.cuda.is_available() and not {**train_defaults(recipe), **recipe.train}["use_cpu"] else "cpu"


def activation_checkpointing(train: dict) -> bool:
    """The recipe's activation checkpointing: off unless it asks (TRL's default is on: memory for ~30% step time)."""
    return bool(train.get("activation_checkpointing", train.get("gradient_checkpointing", False)))


def sft_config(recipe: Recipe, world_size: int, report_to: list[str]):
    """The trl.SFTConfig for a pre-packed store: TRL must not re-template, re-tokenize or re-pack."""
    import torch
    from trl import SFTConfig

    from smoldist.model.attention import run_eval_rows
    from smoldist.model.build import attention_for
    from smoldist.model.precision import autocast_flags

    check_launch_precision_of(recipe)
    train = {**train_defaults(recipe), **recipe.train}
    gbt = train.pop("global_batch_tokens", None)
    rows = train.setdefault("per_device_train_batch_size", DEFAULT_DEVICE_ROWS)
    attention = attention_for(recipe.model, device_type_of(recipe)).name
    train["per_device_eval_batch_size"] = run_eval_rows(attention, train)
    on_gpu = torch.cuda.is_available() and not train["use_cpu"]
    for key, value in autocast_flags(recipe.model.dtype, recipe.model.master_weights, on_gpu).items():
        train.setdefault(key, value)  # autocast to model.dtype over fp32 weights (model/precision.py)
    train.setdefault("report_to", report_to)
    train.setdefault("logging_nan_inf_filter", False)  # True logs a nan loss as the previous average (0 at first)
    train.setdefault("ddp_find_unused_parameters", False)  # every parameter is used; True costs a graph walk per step
    # transformers 5.2x renamed gradient_checkpointing (older 5.x, e.g. 5.17, has only the old name)
    on = activation_checkpointing(train)
    train.pop("gradient_checkpointing", None), train.pop("activation_checkpointing", None)
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
