"""LoRA through peft: the recipe's `model.lora` as a peft.LoraConfig for TRL's `peft_config`, and loading runs back.

A LoRA run's `train.output_dir` holds the adapter (adapter_config.json, adapter_model.safetensors) and the
tokenizer; the base model is named by `base_model_name_or_path` in adapter_config.json (a local base is
recorded as an absolute path, so the run loads from any directory). See docs/lora.md.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from smoldist.config import LoraConfig
from smoldist.distributed.fingerprint import full_parameters, hash_parameters
from smoldist.errors import RecipeError
from smoldist.model.build import added_rows, grow_vocabulary
from smoldist.model.stop_tokens import set_stop_tokens

ADAPTER_CONFIG = "adapter_config.json"


def peft_config(cfg: LoraConfig, token_rows: dict[str, list[int]] | None = None):
    """The peft.LoraConfig for `model.lora`; a comma-separated string of module names is a list. `token_rows`
    (trainable_token_rows) makes the rows of tokens added to the vocabulary train and be saved with the adapter."""
    from peft import LoraConfig as PeftLoraConfig

    targets = cfg.target_modules
    if isinstance(targets, str) and targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        trainable_token_indices=token_rows or None,
    )


def trainable_token_rows(model, added: dict[str, int]) -> dict[str, list[int]]:
    """peft's `trainable_token_indices` for tokens added to the vocabulary (model/build.py grow_vocabulary): every
    row it wrote, in the input embedding and in an untied head (a tied head follows the embedding's rows). Frozen,
    they would stay at their initial values and the model could not learn to end a turn with `<|im_end|>`."""
    rows = added_rows(model, added)
    if not rows:
        return {}
    names = {id(m): n for n, m in model.named_modules()}
    layers = [model.get_input_embeddings()]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not layers[0].weight:
        layers.append(head)
    return {names[id(m)]: rows for m in layers}


def fit_trainable_tokens(model) -> None:
    """A peft model with trainable tokens (trainable_token_rows), made to train and save as smoldist needs:
    - TRL's fused LM head reads `head.weight` and `head.bias`; peft's wrapper forwards only `weight` (the trained
      rows written in): expose the head's bias, unregistered, so it is not a second parameter.
    - save the adapter without the whole embedding tables: peft adds them (vocab x hidden, twice when tied) when the
      vocabulary grew, but the trained rows are in the adapter and `load_model` grows the base the same way.
    - train the rows at the cost of those rows, not of the whole table (model/added_rows.py)."""
    from peft.utils.other import TrainableTokensWrapper

    from smoldist.model.added_rows import train_added_rows

    head = model.get_base_model().get_output_embeddings()
    if isinstance(head, TrainableTokensWrapper):
        object.__setattr__(head, "bias", head.token_adapter.base_layer.bias)
    model.save_pretrained = functools.partial(model.save_pretrained, save_embedding_layers=False)
    train_added_rows(model)


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
        raise RecipeError(
            f"{text}: no such directory; give a run directory of `smoldist train` (its "
            "train.output_dir) or a model directory"
        )


def load_tokenizer_of(path: str | Path):
    """The tokenizer of a run or model directory (or hub id); a path that does not load is one line naming it."""
    from transformers import AutoTokenizer

    check_model_path(path)
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except OSError as e:
        raise RecipeError(
            f"{path}: no such directory here, and not loadable as a hub model: {str(e).splitlines()[0]}"
        ) from None


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
    tok = load_tokenizer_of(path)
    grow_to_run(base, tok)
    if tok.chat_template:  # the base's config names the base's eos: stop where the run's turns end
        set_stop_tokens(tok, base, tok.chat_template)
    return PeftModel.from_pretrained(base, str(path))


def grow_to_run(base, tok) -> None:
    """The base's vocabulary grown to the run's tokenizer (tokens training added, e.g. ChatML's), by the rule
    training used, so the adapter's trained rows (trainable tokens) have rows to load into."""
    eos = base.config.eos_token_id
    added = {t: i for t, i in tok.get_vocab().items() if i >= base.config.vocab_size}
    grow_vocabulary(base, len(tok), added, eos[0] if isinstance(eos, list) else eos)


def base_name(name: str) -> str:
    """A peft parameter name as the base model names it: `base_model.model.x.q_proj.base_layer.weight` ->
    `x.q_proj.weight`, `...embed_tokens.token_adapter.base_layer.weight` -> `...embed_tokens.weight`."""
    return name.removeprefix("base_model.model.").replace(".token_adapter.", ".").replace(".base_layer.", ".")


def trained_by_adapter(name: str) -> bool:
    """A LoRA matrix, or the rows of tokens added to the vocabulary (peft trainable tokens)."""
    return "lora_" in name or "trainable_tokens_delta" in name


def frozen_checksum(model) -> str:
    """sha256 over the parameters that do not train, under their base-model names (gathered, as every fingerprint is).

    For a plain model that is every parameter, so a LoRA run's value equals its base model's when the
    frozen weights are bit-identical."""
    params = [(base_name(n), p) for n, p in model.named_parameters() if not (p.requires_grad and trained_by_adapter(n))]
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
