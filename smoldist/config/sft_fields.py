"""The keys of the recipe's `train` section, without importing trl (and with it torch: ~4 s).

`trl.SFTConfig`'s fields and their annotations are checked in here (SFT_FIELDS, rendered by
`render_type`), so `smoldist prepare` validates `train` exactly as training does while importing
none of torch, transformers or trl. tests/config/test_sft_fields.py compares the table with the installed
SFTConfig, so it cannot drift; SFT_CHOICES holds the values of its enum-typed fields (lr_scheduler_type,
eval_strategy, optim, ...), tested the same way. After a trl or transformers upgrade, regenerate both:

    python -m smoldist.config.sft_fields > /tmp/fields.py    # then paste the tables over the ones below
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

TRL_VERSION = "1.16.0"  # the trl whose SFTConfig the table below describes


class Opaque:
    """A type the recipe checker does not model (an enum, a config class): SFTConfig itself judges the value."""


def render_type(tp: Any) -> str:
    """An annotation as a string that `parse_type` turns back into an equivalent annotation."""
    if tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in typing.get_args(tp)) + "]"
    if origin in (Union, types.UnionType):
        return "Union[" + ", ".join(render_type(a) for a in typing.get_args(tp)) + "]"
    if origin in (list, tuple, dict):
        args = typing.get_args(tp)
        return origin.__name__ + ("[" + ", ".join(render_type(a) for a in args) + "]" if args else "")
    if tp in (bool, int, float, str, list, dict, tuple):
        return tp.__name__
    return "Opaque"


_NAMES = {
    "Any": Any,
    "Literal": Literal,
    "Union": Union,
    "Opaque": Opaque,
    "None": None,
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "list": list,
    "dict": dict,
    "tuple": tuple,
}


def parse_type(text: str) -> Any:
    return eval(text, {"__builtins__": {}}, _NAMES)  # noqa: S307 - only the checked-in table below, names above


def sft_field_types() -> dict[str, Any]:
    """SFTConfig field name -> annotation, as `typing.get_type_hints(SFTConfig)` would give (modulo Opaque)."""
    return {name: parse_type(text) for name, text in SFT_FIELDS.items()}


def installed_sft_choices() -> dict[str, str]:
    """Fields typed by an enum (lr_scheduler_type, eval_strategy, optim, ...): their values, space-separated, for the
    installed trl/transformers (imports them): what SFT_CHOICES must equal."""
    import enum

    from trl import SFTConfig

    out = {}
    for name, tp in sorted(typing.get_type_hints(SFTConfig).items()):
        for arg in typing.get_args(tp) or (tp,):
            if isinstance(arg, type) and issubclass(arg, enum.Enum):
                out[name] = " ".join(str(e.value) for e in arg)
    return out


def sft_choices() -> dict[str, list[str]]:
    """Field name -> its valid values, for the fields SFTConfig types by an enum (checked when the recipe loads)."""
    return {name: text.split() for name, text in SFT_CHOICES.items()}


def installed_sft_fields() -> dict[str, str]:
    """The table for the installed trl (imports it): what SFT_FIELDS must equal."""
    from trl import SFTConfig

    return {name: render_type(tp) for name, tp in sorted(typing.get_type_hints(SFTConfig).items())}


SFT_FIELDS = {
    "accelerator_config": "Union[dict, str, None]",
    "activation_checkpointing": "Union[bool, None]",
    "activation_checkpointing_kwargs": "Union[dict[str, Any], str, None]",
    "activation_offloading": "bool",
    "adam_beta1": "float",
    "adam_beta2": "float",
    "adam_epsilon": "float",
    "assistant_only_loss": "bool",
    "auto_find_batch_size": "bool",
    "average_tokens_across_devices": "bool",
    "batch_eval_metrics": "bool",
    "bf16": "Union[bool, None]",
    "bf16_full_eval": "bool",
    "chat_template_path": "Union[str, None]",
    "completion_only_loss": "Union[bool, None]",
    "data_seed": "Union[int, None]",
    "dataloader_drop_last": "bool",
    "dataloader_in_order": "bool",
    "dataloader_multiprocessing_context": "Union[str, None]",
    "dataloader_num_workers": "int",
    "dataloader_persistent_workers": "bool",
    "dataloader_pin_memory": "bool",
    "dataloader_prefetch_factor": "Union[int, None]",
    "dataset_kwargs": "Union[dict[str, Any], str, None]",
    "dataset_num_proc": "Union[int, None]",
    "dataset_text_field": "str",
    "ddp_backend": "Union[str, None]",
    "ddp_broadcast_buffers": "Union[bool, None]",
    "ddp_bucket_cap_mb": "Union[int, None]",
    "ddp_find_unused_parameters": "Union[bool, None]",
    "ddp_static_graph": "Union[bool, None]",
    "ddp_timeout": "int",
    "debug": "Union[str, list[Opaque]]",
    "deepspeed": "Union[dict, str, None]",
    "disable_tqdm": "Union[bool, None]",
    "do_eval": "bool",
    "do_predict": "bool",
    "do_train": "bool",
    "enable_jit_checkpoint": "bool",
    "eos_token": "Union[str, None]",
    "eval_accumulation_steps": "Union[int, None]",
    "eval_delay": "float",
    "eval_do_concat_batches": "bool",
    "eval_on_start": "bool",
    "eval_packing": "Union[bool, None]",
    "eval_steps": "Union[float, None]",
    "eval_strategy": "Union[Opaque, str]",
    "eval_use_gather_object": "bool",
    "fp16": "bool",
    "fp16_full_eval": "bool",
    "fsdp": "Union[str, None]",
    "fsdp_config": "Union[dict[str, Any], str, None]",
    "full_determinism": "bool",
    "gradient_accumulation_steps": "int",
    "gradient_checkpointing": "bool",
    "gradient_checkpointing_kwargs": "Union[dict[str, Any], str, None]",
    "greater_is_better": "Union[bool, None]",
    "hub_always_push": "bool",
    "hub_model_id": "Union[str, None]",
    "hub_private_repo": "Union[bool, None]",
    "hub_revision": "Union[str, None]",
    "hub_strategy": "Union[Opaque, str]",
    "hub_token": "Union[str, None]",
    "ignore_data_skip": "bool",
    "include_for_metrics": "list[str]",
    "include_num_input_tokens_seen": "Union[str, bool]",
    "label_names": "Union[list[str], None]",
    "label_smoothing_factor": "float",
    "learning_rate": "float",
    "length_column_name": "str",
    "liger_kernel_config": "Union[dict[str, bool], None]",
    "load_best_model_at_end": "bool",
    "local_rank": "int",
    "log_level": "str",
    "log_level_replica": "str",
    "log_on_each_node": "bool",
    "logging_first_step": "bool",
    "logging_nan_inf_filter": "bool",
    "logging_steps": "float",
    "logging_strategy": "Union[Opaque, str]",
    "loss_type": "str",
    "lr_scheduler_kwargs": "Union[dict, str, None]",
    "lr_scheduler_type": "Union[Opaque, str]",
    "max_grad_norm": "float",
    "max_length": "Union[int, None]",
    "max_steps": "int",
    "metric_for_best_model": "Union[str, None]",
    "model_init_kwargs": "Union[dict[str, Any], str, None]",
    "neftune_noise_alpha": "Union[float, None]",
    "num_train_epochs": "float",
    "optim": "Union[Opaque, str]",
    "optim_args": "Union[str, None]",
    "optim_target_modules": "Union[None, str, list[str]]",
    "output_dir": "Union[str, None]",
    "packing": "bool",
    "packing_strategy": "str",
    "pad_to_multiple_of": "Union[int, str, None]",
    "pad_token": "Union[str, None]",
    "padding_free": "bool",
    "parallelism_config": "Union[Opaque, None]",
    "per_device_eval_batch_size": "int",
    "per_device_train_batch_size": "int",
    "prediction_loss_only": "bool",
    "project": "str",
    "push_to_hub": "bool",
    "remove_unused_columns": "bool",
    "report_to": "Union[None, str, list[str]]",
    "restore_callback_states_from_checkpoint": "bool",
    "resume_from_checkpoint": "Union[str, None]",
    "router_aux_loss_coef": "Union[float, None]",
    "run_name": "Union[str, None]",
    "save_on_each_node": "bool",
    "save_only_model": "bool",
    "save_steps": "float",
    "save_strategy": "Union[Opaque, str]",
    "save_total_limit": "Union[int, None]",
    "seed": "int",
    "shuffle_dataset": "bool",
    "skip_memory_metrics": "bool",
    "tf32": "Union[bool, None]",
    "torch_compile": "bool",
    "torch_compile_backend": "Union[str, None]",
    "torch_compile_mode": "Union[str, None]",
    "torch_empty_cache_steps": "Union[int, None]",
    "trackio_bucket_id": "Union[str, None]",
    "trackio_space_id": "Union[str, None]",
    "trackio_static_space_id": "Union[str, None, Literal[False]]",
    "train_sampling_strategy": "str",
    "truncation_mode": "str",
    "trust_remote_code": "bool",
    "use_cache": "bool",
    "use_cpu": "bool",
    "use_liger_kernel": "bool",
    "warmup_steps": "float",
    "weight_decay": "float",
}


# The values of SFTConfig's enum-typed fields (transformers' SchedulerType, IntervalStrategy, ...: their module imports
# torch, so the recipe checker reads this table instead)
SFT_CHOICES = {
    "eval_strategy": "no steps epoch",
    "hub_strategy": "end every_save checkpoint all_checkpoints",
    "logging_strategy": "no steps epoch",
    "lr_scheduler_type": "linear cosine cosine_with_restarts polynomial constant constant_with_warmup inverse_sqrt "
    "reduce_lr_on_plateau cosine_with_min_lr cosine_warmup_with_min_lr warmup_stable_decay greedy",
    "optim": "adamw_torch adamw_torch_fused adamw_torch_xla adamw_torch_npu_fused adafactor adamw_anyprecision "
    "adamw_torch_4bit adamw_torch_8bit ademamix sgd adagrad adamw_bnb_8bit adamw_8bit ademamix_8bit "
    "lion_8bit lion_32bit paged_adamw_32bit paged_adamw_8bit paged_ademamix_32bit paged_ademamix_8bit "
    "paged_lion_32bit paged_lion_8bit rmsprop rmsprop_bnb rmsprop_bnb_8bit rmsprop_bnb_32bit galore_adamw "
    "galore_adamw_8bit galore_adafactor galore_adamw_layerwise galore_adamw_8bit_layerwise "
    "galore_adafactor_layerwise lomo adalomo grokadamw schedule_free_radam schedule_free_adamw "
    "schedule_free_sgd apollo_adamw apollo_adamw_layerwise stable_adamw",
    "save_strategy": "no steps epoch best",
}


if __name__ == "__main__":
    import textwrap

    import trl

    print(f'TRL_VERSION = "{trl.__version__}"\nSFT_FIELDS = {{')
    for name, text in installed_sft_fields().items():
        print(f"    {name!r}: {text!r},")
    print("}\n\nSFT_CHOICES = {")
    for name, text in installed_sft_choices().items():
        lines = textwrap.wrap(text, 100, break_on_hyphens=False)
        print(
            f"    {name!r}: "
            + "\n        ".join(repr(w + (" " if i < len(lines) - 1 else "")) for i, w in enumerate(lines))
            + ","
        )
    print("}")
