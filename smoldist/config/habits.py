"""Habits from plain TRL and axolotl, recognised: a TRL command-line flag or a flat TRL/axolotl YAML key gets the
recipe key smoldist reads instead, in one line.

    smoldist train R --learning_rate 1e-4      ->  write train.learning_rate=1e-4
    model_name_or_path: ... (top level)        ->  model.name_or_path
"""

from __future__ import annotations

from smoldist.config.sft_keys import DERIVED, HONOURED, REFUSED

# TRL script arguments (ScriptArguments, ModelConfig) and axolotl keys -> the recipe key that does the same
FLAT = {
    "model_name_or_path": "model.name_or_path",
    "base_model": "model.name_or_path",
    "model_revision": "model.revision",
    "tokenizer_name_or_path": "model.tokenizer",
    "tokenizer_config": "model.tokenizer",
    "dtype": "model.dtype",
    "torch_dtype": "model.dtype",
    "attn_implementation": "model.attn_implementation",
    "chat_template": "model.chat_template",
    "use_peft": "model.lora.r (a model.lora section turns LoRA on)",
    "adapter": "model.lora.r (a model.lora section turns LoRA on)",
    "lora_r": "model.lora.r",
    "lora_alpha": "model.lora.alpha",
    "lora_dropout": "model.lora.dropout",
    "lora_target_modules": "model.lora.target_modules",
    "dataset_name": "data.sources.0.path",
    "datasets": "data.sources",
    "dataset_config": "data.sources.0.name",
    "dataset_train_split": "data.sources.0.split",
    "max_length": "data.seq_len",
    "max_seq_length": "data.seq_len",
    "sequence_len": "data.seq_len",
    "packing": "data.packing (bfd, wrapped or none)",
    "sample_packing": "data.packing (bfd, wrapped or none)",
    "val_set_size": "data.eval_fraction",
    "train_on_inputs": "data.loss_on (assistant or all)",
    "assistant_only_loss": "data.loss_on (assistant or all)",
    "completion_only_loss": "data.loss_on (assistant or all)",
    "dataset_num_proc": "data.num_proc",
    "dataset_prepared_path": "data.store",
    "micro_batch_size": "train.per_device_train_batch_size",
    "num_epochs": "train.num_train_epochs",
    "gradient_accumulation_steps": "train.global_batch_tokens (tokens per optimiser step; accumulation is derived)",
    "bf16": "model.dtype=bfloat16",
    "fp16": "model.dtype=float16",
    "wandb_project": "tracking.wandb.project",
    "wandb_entity": "tracking.wandb.entity",
    "wandb_name": "tracking.wandb.name",
}
SHOW = 6  # mappings named in one line


def recipe_key(name: str) -> str | None:
    """The recipe key for a TRL/axolotl key or flag (`--learning_rate`, `max-length`), None if smoldist has none."""
    key = name.lstrip("-").split("=", 1)[0].replace("-", "_")
    if key in FLAT:
        return FLAT[key]
    if key in HONOURED:
        return f"train.{key}"
    if key in DERIVED:
        return DERIVED[key].split(" (")[0]
    return REFUSED.get(key)


def flag_hint(flag: str, value: str | None, command: str) -> str | None:
    """One line for a TRL flag given to a smoldist command, else None."""
    target = recipe_key(flag)
    name = flag.split("=", 1)[0]
    if target is None or not name.startswith("--"):
        return None
    value = flag.split("=", 1)[1] if "=" in flag else value
    key, _, note = target.partition(" ")
    if not key.startswith(("model.", "data.", "train.", "tracking.")):
        return f"{name} is a TRL flag; smoldist {command} takes instead: {target}"
    # a key with a note takes other values than the flag's (a step count -> tokens, true -> bfd): no copy of it
    write = key if "=" in key else f"{key}={'...' if note or value is None else value}"
    return f"{name} is a TRL flag; smoldist {command} takes recipe overrides: write {write}{' ' + note if note else ''}"


def flat_config_hint(keys: list[str]) -> str | None:
    """For a recipe whose top level holds TRL/axolotl keys rather than sections: the keys to write instead."""
    mapped = [(k, recipe_key(k)) for k in keys if recipe_key(k)]
    if not mapped:
        return None
    shown = ", ".join(f"{k} -> {v}" for k, v in mapped[:SHOW])
    more = f", and {len(mapped) - SHOW} more" if len(mapped) > SHOW else ""
    return (
        f"this looks like a flat TRL/axolotl config; a smoldist recipe has sections model, data, train, tracking: "
        f"{shown}{more} (`smoldist recipes --copy NAME DEST` writes a recipe to start from)"
    )
