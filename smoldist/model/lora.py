"""LoRA through peft: the recipe's `model.lora` as a peft.LoraConfig for TRL's `peft_config`, and loading runs back.

A LoRA run's `train.output_dir` holds the adapter (adapter_config.json, adapter_model.safetensors) and the
tokenizer; the base model is named by `base_model_name_or_path` in adapter_config.json (a local base is
recorded as an absolute path, so the run loads from any directory). See docs/lora.md.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from smoldist.config import LoraConfig
from smoldist.distributed.fingerprint import full_parameters, hash_parameters
from smoldist.errors import RecipeError

ADAPTER_CONFIG = "adapter_config.json"


def peft_config(cfg: LoraConfig):
    """The peft.LoraConfig for `model.lora`; a comma-separated string of module names is a list."""
    from peft import LoraConfig as PeftLoraConfig

    targets = cfg.target_modules
    if isinstance(targets, str) and targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                          task_type="CAUSAL_LM")


def pin_base_path(model) -> None:
    """Record a local base model by absolute path: adapter_config.json then names a base that loads from any CWD."""
    name = getattr(model.config, "_name_or_path", None)
    if name and os.path.isdir(name):
        model.config._name_or_path = os.path.abspath(name)


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def base_of(adapter_dir: str | Path) -> str:
    base = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise RecipeError(f"{adapter_dir}/{ADAPTER_CONFIG}: no base_model_name_or_path; cannot find the base model")
    return base


HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name: what from_pretrained looks up on the hub when no such folder


def check_model_path(path: str | Path) -> None:
    """A run or model directory that is not there: one line naming it, before transformers treats it as a hub id."""
    text = str(path)
    if os.path.exists(text):
        return
    local = not HUB_ID.match(text) or text.startswith(".") or os.path.isdir(text.split("/")[0])
    if local:
        raise RecipeError(f"{text}: no such directory; give a run directory of `smoldist train` (its "
                          "train.output_dir) or a model directory")


def load_tokenizer_of(path: str | Path):
    """The tokenizer of a run or model directory (or hub id); a path that does not load is one line naming it."""
    from transformers import AutoTokenizer

    check_model_path(path)
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except OSError as e:
        raise RecipeError(f"{path}: no such directory here, and not loadable as a hub model: "
                          f"{str(e).splitlines()[0]}") from None


def load_model(path: str | Path, dtype=None):
    """A full model directory, or a LoRA run (base + adapter, unmerged, as a peft.PeftModel)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()  # chat, eval, merge: a "Loading weights" bar per call is noise around their output

    check_model_path(path)
    dtype = dtype or torch.float32
    if not is_adapter_dir(path):
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(base_of(path), dtype=dtype)
    return PeftModel.from_pretrained(base, str(path))


def base_name(name: str) -> str:
    """A peft parameter name as the base model names it:
    `base_model.model.x.q_proj.base_layer.weight` -> `x.q_proj.weight`."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def frozen_checksum(model) -> str:
    """sha256 over the parameters that do not train, under their base-model names (gathered, as every fingerprint is).

    For a plain model that is every parameter, so a LoRA run's value equals its base model's when the
    frozen weights are bit-identical."""
    params = [(base_name(n), p) for n, p in model.named_parameters() if not (p.requires_grad and "lora_" in n)]
    with full_parameters([p for _, p in params]):
        return hash_parameters(sorted(params, key=lambda x: x[0]))


def count_parameters(model) -> tuple[int, int]:
    """(all, trainable) parameters; `ds_numel` where ZeRO-3 has partitioned them."""
    total = trainable = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", None) or p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable
