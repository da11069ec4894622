"""The recipe's training method (`method: sft | dpo`) and the `dpo` section: what preference tuning needs beyond SFT.

    method: dpo
    dpo: {beta: 0.1, loss_type: sigmoid}

A DPO recipe reads `format: preference` sources (docs/dpo.md); pairs longer than `data.seq_len` are truncated from
the prompt's start (`data.overflow: truncate`) or dropped (`drop`), both counted. Checked here before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from smoldist.config.recipe import help_field
from smoldist.errors import RecipeError

METHODS = ("sft", "dpo")
PREFERENCE = "preference"  # the source format of preference pairs
DPO_OVERFLOW = ("truncate", "drop")  # a pair is never split: its sequences must share a row
LossType = Literal["sigmoid", "ipo", "sigmoid_norm"]


@dataclass
class DpoConfig:
    beta: float = help_field(0.1, "DPO's beta: how far the policy may move from the reference (TRL's DPOConfig.beta)")
    loss_type: LossType = help_field(
        "sigmoid", "sigmoid (DPO), ipo, or sigmoid_norm (length-normalised DPO): TRL's formulas (docs/dpo.md)"
    )


def validate_method(method: str, dpo: DpoConfig | None, data) -> None:
    """One line before any work for a DPO recipe smoldist cannot run as asked, or a preference source under SFT."""
    preference = [i for i, s in enumerate(data.sources) if s.format == PREFERENCE]
    if method not in METHODS:
        raise RecipeError(f"method: '{method}' is not one of {', '.join(METHODS)}")
    if method == "sft":
        if preference:
            raise RecipeError(
                f"data.sources.{preference[0]}.format: preference pairs train with method: dpo (the recipe says sft)"
            )
        if dpo is not None:
            raise RecipeError("dpo: a dpo section needs method: dpo (the recipe trains with sft)")
        return
    others = [i for i, s in enumerate(data.sources) if s.format != PREFERENCE]
    if others:
        raise RecipeError(f"data.sources.{others[0]}.format: method dpo reads format: preference sources only")
    if data.overflow not in DPO_OVERFLOW:
        raise RecipeError(
            f"data.overflow: '{data.overflow}' would split a pair; method dpo takes truncate (cut the prompt's start) "
            "or drop"
        )
    if data.packing != "bfd":
        raise RecipeError(f"data.packing: '{data.packing}' is not supported with method dpo; pairs pack with bfd")
    if data.loss_on != "assistant":
        raise RecipeError("data.loss_on: method dpo scores the completions only; set data.loss_on: assistant")
    if dpo is not None and dpo.beta <= 0:
        raise RecipeError(f"dpo.beta: {dpo.beta} must be positive")
