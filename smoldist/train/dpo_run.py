"""What train/run.py does differently for `method: dpo`: refuse what is not supported before any work, compute or
reuse the reference log-probs before the trainer exists, and build the DPO trainer's arguments.

    smoldist train launch/smollm2-135m/dpo-ultrafeedback.yaml
    accelerate launch --config_file accelerate_configs/cpu_ddp.yaml -m smoldist.train RECIPE     # DDP
    accelerate launch --config_file accelerate_configs/cpu_zero3.yaml -m smoldist.train RECIPE   # ZeRO-3 (or zero2)
    accelerate launch --config_file accelerate_configs/fsdp2.yaml -m smoldist.train RECIPE       # FSDP2 (GPUs)

Supported: one process, DDP, DeepSpeed ZeRO-2 and ZeRO-3, FSDP2; full fine-tuning and LoRA (the reference pass runs
before the adapter exists: the base); evaluation during training (`train.eval_strategy`). Refused in one line:
FSDP1 (`refuse_launch`, from the accelerate launch it runs under; `check_engine`, from the engine really built).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from smoldist.config import Recipe
from smoldist.distributed.state import DistInfo
from smoldist.errors import RecipeError
from smoldist.eval.dpo_loss import REFERENCE_RECORD, PairCollator
from smoldist.train.dpo_reference import reference_logps

SUPPORTED_ENGINES = ("single", "ddp", "deepspeed-zero2", "deepspeed-zero3", "fsdp2")


def refuse_launch(environ=os.environ) -> None:
    """A DPO run under an engine it does not support stops here, before the store or the model."""
    fsdp = environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp and environ.get("FSDP_VERSION", "1") != "2":
        raise RecipeError(
            "method dpo: FSDP1 is not supported (smoldist trains with FSDP2 only); "
            f"supported: {', '.join(SUPPORTED_ENGINES)} (accelerate_configs/fsdp2.yaml)"
        )


def check_engine(engine: str) -> None:
    """The engine the trainer's accelerator really built (a belt to refuse_launch's braces)."""
    if engine not in SUPPORTED_ENGINES:
        raise RecipeError(f"method dpo: engine {engine} is not supported; supported: {', '.join(SUPPORTED_ENGINES)}")


def merged(reference: dict) -> np.ndarray:
    """One [pairs in the store, 2] array for the train and eval splits (pair ids are store-wide; each split's array
    is NaN at the other's pairs), so one collator serves training and evaluation."""
    arrays = list(reference.values())
    out = np.full((max(len(a) for a in arrays), 2), np.nan)
    for a in arrays:
        found = ~np.isnan(a[:, 0])
        out[: len(a)][found] = a[found]
    return out


def autocast_of(args) -> str:
    """The dtype the trainer's forward runs in, as the reference pass must run it."""
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"


def dpo_trainer_kwargs(recipe: Recipe, model, tokenizer, store_path, train_ds, eval_ds, dist: DistInfo, args) -> dict:
    """The reference log-probs (computed once, or reused from the store), and the DPO trainer's extra arguments."""
    from smoldist.model.attention import register

    register()
    splits = {"train": train_ds, **({"eval": eval_ds} if eval_ds is not None else {})}
    collate = PairCollator(tokenizer.pad_token_id)
    reference, folder = reference_logps(
        model, splits, store_path, collate, dist, args.device, autocast_of(args), recipe.model.attn_implementation
    )
    if dist.is_main:  # `smoldist eval RUN --loss` scores against the same reference
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / REFERENCE_RECORD).write_text(json.dumps({"folder": str(folder)}))
    return {
        "data_collator": PairCollator(tokenizer.pad_token_id, merged(reference)),
        "beta": recipe.dpo.beta,
        "loss_type": recipe.dpo.loss_type,
    }
