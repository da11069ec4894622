"""Every trl.SFTConfig key, classified: honoured (passed to SFTConfig as written), derived (smoldist sets it from
another part of the recipe), or refused (it would do nothing, or contradict the recipe: use what is named instead).

The recipe's `train` section is checked against this table when the recipe loads, before any work.
tests/config/test_sft_keys.py fails when the installed SFTConfig has a key this table does not classify, and when
docs/sft-keys.md differs from the table; regenerate the page with

    python -m smoldist.config.sft_keys > docs/sft-keys.md
"""

from __future__ import annotations

from smoldist.config.sft_fields import SFT_FIELDS, TRL_VERSION

# set by smoldist from another part of the recipe: a recipe value is refused (PRECISION_KEYS: accepted if it agrees)
DERIVED = {
    "max_length": "data.seq_len",
    "packing": "data.packing (the store's rows are packed already)",
    "packing_strategy": "data.packing",
    "padding_free": "data.packing",
    "assistant_only_loss": "data.loss_on (the store's labels carry the mask)",
    "completion_only_loss": "data.loss_on",
    "dataset_kwargs": "the prepared store (skip_prepare_dataset)",
    "dataset_text_field": "the prepared store",
    "gradient_accumulation_steps": "train.global_batch_tokens and the world size",
    "bf16": "model.dtype and model.master_weights (a value that agrees is accepted)",
    "fp16": "model.dtype and model.master_weights (a value that agrees is accepted)",
    "eos_token": "the chat template's end of turn (a value that agrees is accepted)",
    "local_rank": "the launcher",
}
AGREEING = ("bf16", "fp16", "eos_token")  # checked against what derives them (config/load.py, train/run.py)
# would do nothing under a prepared store, or contradict the recipe: what to use instead
REFUSED = {
    "eval_packing": "data.packing (the store packs its eval rows as it packs its train rows)",
    "dataset_num_proc": "data.num_proc (`smoldist prepare` tokenizes; the trainer never does)",
    "shuffle_dataset": "data.seed (the store's order; TRL shuffles only data it prepares itself)",
    "truncation_mode": "data.overflow (split, truncate or drop, counted when the store is built)",
    "chat_template_path": "model.chat_template",
    "pad_token": "nothing: padding-free rows have no pad; smoldist sets the saved tokenizer's pad",
    "model_init_kwargs": "model.dtype, model.attn_implementation, model.revision (smoldist loads the model)",
    "trust_remote_code": "nothing: smoldist loads the model and tokenizer itself, without remote code",
    "do_train": "nothing: the trainer does not read it; `smoldist train` trains",
    "do_eval": "train.eval_strategy",
    "do_predict": "`smoldist eval`",
    "deepspeed": "--accelerate-config zero2|zero3|zero3_offload (or a DeepSpeed accelerate YAML)",
    "fsdp": "--accelerate-config fsdp2",
    "fsdp_config": "--accelerate-config fsdp2 (or an FSDP accelerate YAML)",
    "parallelism_config": "--accelerate-config (an accelerate YAML)",
    "ddp_backend": "nothing: smoldist creates the process group (gloo on CPU, nccl on GPU)",
    "auto_find_batch_size": "train.per_device_train_batch_size (it would change the global batch)",
    "bf16_full_eval": "model.dtype (evaluation runs under the training autocast)",
    "fp16_full_eval": "model.dtype (evaluation runs under the training autocast)",
}
# passed to SFTConfig as written; listed one by one, so that a key a new trl adds is classified before it is taken
HONOURED = """
    accelerator_config activation_checkpointing activation_checkpointing_kwargs activation_offloading adam_beta1
    adam_beta2 adam_epsilon average_tokens_across_devices batch_eval_metrics data_seed dataloader_drop_last
    dataloader_in_order dataloader_multiprocessing_context dataloader_num_workers dataloader_persistent_workers
    dataloader_pin_memory dataloader_prefetch_factor ddp_broadcast_buffers ddp_bucket_cap_mb
    ddp_find_unused_parameters ddp_static_graph ddp_timeout debug disable_tqdm enable_jit_checkpoint
    eval_accumulation_steps eval_delay eval_do_concat_batches eval_on_start eval_steps eval_strategy
    eval_use_gather_object full_determinism gradient_checkpointing gradient_checkpointing_kwargs greater_is_better
    hub_always_push hub_model_id hub_private_repo hub_revision hub_strategy hub_token ignore_data_skip
    include_for_metrics include_num_input_tokens_seen label_names label_smoothing_factor learning_rate
    length_column_name liger_kernel_config load_best_model_at_end log_level log_level_replica log_on_each_node
    logging_first_step logging_nan_inf_filter logging_steps logging_strategy loss_type lr_scheduler_kwargs
    lr_scheduler_type max_grad_norm max_steps metric_for_best_model neftune_noise_alpha num_train_epochs optim
    optim_args optim_target_modules output_dir pad_to_multiple_of per_device_eval_batch_size
    per_device_train_batch_size prediction_loss_only project push_to_hub remove_unused_columns report_to
    restore_callback_states_from_checkpoint resume_from_checkpoint router_aux_loss_coef run_name save_on_each_node
    save_only_model save_steps save_strategy save_total_limit seed skip_memory_metrics tf32 torch_compile
    torch_compile_backend torch_compile_mode torch_empty_cache_steps trackio_bucket_id trackio_space_id
    trackio_static_space_id train_sampling_strategy use_cache use_cpu use_liger_kernel warmup_steps weight_decay
""".split()  # noqa: SIM905 - a word list, wrapped
NOTES = {  # how smoldist honours some of them
    "output_dir": "default runs/<recipe name>",
    "use_cpu": "default true on a machine without a GPU (CPU ranks would otherwise train as independent copies)",
    "report_to": "default: W&B as tracking.wandb says; an integration that is not installed is refused",
    "logging_nan_inf_filter": "default false (true logs a nan loss as the previous average)",
    "ddp_find_unused_parameters": "default false",
    "ddp_timeout": "also the timeout of the process group smoldist creates",
    "gradient_checkpointing": "or activation_checkpointing, the newer name",
    "per_device_eval_batch_size": "default from per_device_train_batch_size and the attention kernel",
    "resume_from_checkpoint": "checked to be a checkpoint of the same run (docs/launching.md)",
    "max_steps": "may change on resume: raising it continues a finished run",
    "num_train_epochs": "may change on resume: raising it continues a finished run",
}
# report_to names -> modules any of which makes the integration usable (transformers.integrations)
INTEGRATIONS = {
    "wandb": ("wandb",),
    "tensorboard": ("tensorboard", "tensorboardX"),
    "mlflow": ("mlflow",),
    "comet_ml": ("comet_ml",),
    "neptune": ("neptune",),
    "clearml": ("clearml",),
    "codecarbon": ("codecarbon",),
    "azure_ml": ("azureml",),
    "dagshub": ("dagshub",),
    "dvclive": ("dvclive",),
    "flyte": ("flytekit",),
    "swanlab": ("swanlab",),
    "trackio": ("trackio",),
}


def unclassified(fields) -> list[str]:
    """SFTConfig keys this table does not classify (a newer trl's): each must be placed before it can be taken."""
    return sorted(set(fields) - set(HONOURED) - set(DERIVED) - set(REFUSED))


def classify(key: str) -> tuple[str, str]:
    """('honoured' | 'derived' | 'refused', from what / what instead) for an SFTConfig key."""
    if key in DERIVED:
        return "derived", DERIVED[key]
    if key in REFUSED:
        return "refused", REFUSED[key]
    return "honoured", NOTES.get(key, "")


def report_to_problem(value) -> str | None:
    """Why train.report_to cannot work here (an unknown or uninstalled integration), else None."""
    import importlib.util

    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value or []) if v.strip()]
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in INTEGRATIONS:
            return f"'{name}' is not one of none, all, {', '.join(INTEGRATIONS)}"
        if not any(importlib.util.find_spec(m) for m in INTEGRATIONS[name]):
            return f"'{name}' is not installed (pip install {INTEGRATIONS[name][0]}), or leave it out"
    return None


def render() -> str:
    """docs/sft-keys.md: the table, generated from the pinned SFTConfig's fields."""
    lines = [
        "# `train` keys: every trl.SFTConfig key, honoured, derived or refused",
        "",
        f"The recipe's `train` section takes trl {TRL_VERSION} `SFTConfig` keys, plus smoldist's own",
        "`global_batch_tokens`. A derived or refused key is refused when the recipe loads, in one line naming",
        "what to use instead. Generated by `python -m smoldist.config.sft_keys` (smoldist/config/sft_keys.py).",
        "",
        "| key | smoldist | from what / use instead |",
        "|---|---|---|",
    ]
    for key in sorted(SFT_FIELDS):
        kind, why = classify(key)
        lines.append(f"| `{key}` | {kind} | {why} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
