"""What train/run.py does differently for `method: dpo`: refuse what is not supported before any work, compute or
reuse the reference log-probs before the trainer exists, and build the DPO trainer's arguments.

    smoldist train launch/smollm2-135m/dpo-ultrafeedback.yaml
    accelerate launch --config_file accelerate_configs/cpu_ddp.yaml -m smoldist.train RECIPE     # DDP

Supported: one process and DDP, full fine-tuning and LoRA (the reference pass runs before the adapter exists: the
base). Refused in one line: DeepSpeed, FSDP, evaluation during training (config/dpo.py checks the recipe;
`refuse_launch` the accelerate launch it runs under).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from smoldist.config import Recipe
from smoldist.distributed.state import DistInfo
from smoldist.errors import RecipeError
from smoldist.eval.dpo_loss import REFERENCE_RECORD, PairCollator
from smoldist.train.dpo_reference import reference_logps

SUPPORTED_ENGINES = ("single", "ddp")
# what `accelerate launch --config_file` tells its ranks about the engine (before any accelerator exists)
ENGINE_ENV = {"ACCELERATE_USE_DEEPSPEED": "DeepSpeed", "ACCELERATE_USE_FSDP": "FSDP"}


def refuse_launch(environ=os.environ) -> None:
    """A DPO run under an engine it does not support yet stops here, before the store or the model."""
    for var, engine in ENGINE_ENV.items():
        if environ.get(var, "false").lower() == "true":
            raise RecipeError(
                f"method dpo: {engine} is not yet supported; supported: {', '.join(SUPPORTED_ENGINES)} "
                "(one process, or accelerate's cpu_ddp / multi_gpu configs)"
            )


def check_engine(engine: str) -> None:
    """The engine the trainer's accelerator really built (a belt to refuse_launch's braces)."""
    if engine not in SUPPORTED_ENGINES:
        raise RecipeError(
            f"method dpo: engine {engine} is not yet supported; supported: {', '.join(SUPPORTED_ENGINES)}"
        )


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
        "data_collator": PairCollator(tokenizer.pad_token_id, reference["train"]),
        "beta": recipe.dpo.beta,
        "loss_type": recipe.dpo.loss_type,
    }
