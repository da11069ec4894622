"""What runs in which dtype: fp32 master weights, `model.dtype` compute, a saved model in `model.dtype`.

    model.dtype: bfloat16          # compute dtype: bf16 autocast (GPU and CPU), fp32 parameters + optimizer
    model.master_weights: none     # opt-in: parameters and Adam state in bf16 too (warns: small updates are lost)

Parameters and optimizer state stay fp32 on every engine: single device and DDP through the trainer's
autocast (`bf16=True`), DeepSpeed through its own fp32 partitions, FSDP2 through its mixed-precision
policy. The final model is written in `model.dtype` (half the size in bf16, as users expect), while
checkpoints keep fp32 so that a resume continues exactly. See docs/precision.md.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from smoldist.errors import RecipeError

PURE_LOW_PRECISION_WARNING = (
    "model.master_weights: none trains the weights themselves in {dtype} with no fp32 master copy: "
    "Adam updates smaller than half a {dtype} ulp of a weight (2^-9 x |w| for bf16) are rounded away, "
    "so at usual fine-tuning learning rates much of the learning is lost. Use master_weights: float32 "
    "(the default) unless memory forces this."
)


def load_dtype(dtype: str, master_weights: str) -> str:
    """The dtype parameters are created in: fp32 unless pure low precision was asked for."""
    if dtype != "float32" and master_weights == "none":
        warnings.warn(PURE_LOW_PRECISION_WARNING.format(dtype=dtype), stacklevel=2)
        return dtype
    return "float32"


def autocast_flags(dtype: str, master_weights: str, on_gpu: bool) -> dict:
    """SFTConfig's bf16/fp16: autocast to the compute dtype over fp32 weights (fp16 only on GPUs, with a scaler)."""
    mixed = master_weights == "float32"
    return {"bf16": mixed and dtype == "bfloat16", "fp16": mixed and on_gpu and dtype == "float16"}


def cast_saved_model(output_dir: str | Path, dtype: str) -> list[str]:
    """Rewrite the saved full-model weights in `dtype` and record it in config.json; returns the files cast.

    Only `model*.safetensors` (the full model) is cast; adapters and checkpoints keep their dtype."""
    import torch
    from safetensors.torch import load_file, save_file

    out = Path(output_dir)
    target = getattr(torch, dtype)
    cast, total_bytes = [], 0
    for f in sorted(out.glob("model*.safetensors")):
        tensors = load_file(str(f))
        if any(t.is_floating_point() and t.dtype != target for t in tensors.values()):
            tensors = {k: (t.to(target) if t.is_floating_point() else t).contiguous() for k, t in tensors.items()}
            save_file(tensors, str(f), metadata={"format": "pt"})
            cast.append(f.name)
        total_bytes += sum(t.numel() * t.element_size() for t in tensors.values())
    index = out / "model.safetensors.index.json"
    if cast and index.is_file():  # sharded: the index records the total size
        idx = json.loads(index.read_text())
        idx.setdefault("metadata", {})["total_size"] = total_bytes
        index.write_text(json.dumps(idx, indent=2) + "\n")
    config = out / "config.json"
    if config.is_file():
        c = json.loads(config.read_text())
        c["dtype"] = dtype
        c.pop("torch_dtype", None)
        config.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")
    return cast


def mixed_precision(dtype: str, master_weights: str, train: dict, on_gpu: bool) -> str:
    """accelerate's name for the autocast a recipe asks for ('bf16', 'fp16' or 'no'); train.bf16/fp16 win."""
    flags = {**autocast_flags(dtype, master_weights, on_gpu), **{k: train[k] for k in ("bf16", "fp16") if k in train}}
    return "fp16" if flags["fp16"] else "bf16" if flags["bf16"] else "no"


def check_launch_precision(recipe_precision: str, launch_precision: str | None, dtype: str) -> None:
    """Refuse a launcher's autocast that the recipe did not ask for: with bf16 and fp16 off, TrainingArguments takes
    ACCELERATE_MIXED_PRECISION (the accelerate config's `mixed_precision`), so a float32 recipe would run bf16."""
    if recipe_precision == "no" and launch_precision not in (None, "", "no"):
        raise RecipeError(
            f"model.dtype: {dtype} asks for no autocast, but the launch says mixed_precision: {launch_precision} "
            f"(ACCELERATE_MIXED_PRECISION, from the accelerate config or --mixed_precision); launch with "
            f"`smoldist train --accelerate-config ...` (it passes the recipe's precision) or `accelerate launch "
            f"--mixed_precision no`, or set model.dtype to match"
        )


def reduce_in_fp32(accelerator_state) -> None:
    """Sum and reduce gradients in fp32 under FSDP2 and DeepSpeed, as DDP does with its fp32 parameters, and leave
    FSDP2's outputs (the loss TRL computes inside the forward) in the dtype they were computed in.

    accelerate gives FSDP2 `reduce_dtype = param_dtype` (bf16), and FSDP2 accumulates unsynchronised micro-batch
    gradients in `reduce_dtype`; accelerate 1.15 also sets `output_dtype` to bf16 (1.16 leaves it None), and FSDP2
    casts the root module's outputs to it, so the loss, eval loss and metrics would be rounded to bf16 there and not
    under DDP or DeepSpeed. DeepSpeed's `communication_data_type` and `data_types.grad_accum_dtype` default to its
    engine's bf16. Values a user's DeepSpeed config sets are kept. Call before `accelerator.prepare`."""
    import dataclasses

    import torch

    fsdp = getattr(accelerator_state, "fsdp_plugin", None)
    if fsdp is not None and fsdp.mixed_precision_policy is not None:
        fsdp.mixed_precision_policy = dataclasses.replace(
            fsdp.mixed_precision_policy, reduce_dtype=torch.float32, output_dtype=None
        )
    ds = getattr(accelerator_state, "deepspeed_plugin", None)
    if ds is not None:
        config = ds.deepspeed_config
        config.setdefault("communication_data_type", "fp32")
        if ds.zero_stage >= 1:  # DeepSpeed 0.19.8 refuses a bf16 engine with fp32 accumulation without ZeRO
            config.setdefault("data_types", {}).setdefault("grad_accum_dtype", "fp32")


def precision_report(accelerator, wrapped_model) -> dict:
    """The dtypes the engine was really built with, read from the live objects (recorded in each rank's report)."""
    report = {"mixed_precision": str(accelerator.mixed_precision)}
    if hasattr(wrapped_model, "get_data_types"):  # a DeepSpeed engine
        model_dtype, accum_dtype = wrapped_model.get_data_types()
        report.update(
            param_dtype=str(model_dtype),
            grad_accum_dtype=str(accum_dtype),
            reduce_dtype=str(wrapped_model.communication_data_type),
        )
    sharded = [m for m in wrapped_model.modules() if hasattr(m, "_get_fsdp_state")]
    if sharded:  # FSDP2: the policy fully_shard received
        policy = sharded[0]._get_fsdp_state()._mp_policy
        report.update(
            param_dtype=str(policy.param_dtype),
            reduce_dtype=str(policy.reduce_dtype),
            grad_accum_dtype=str(policy.reduce_dtype),  # unsynchronised micro-batches sum in reduce_dtype
            output_dtype=str(policy.output_dtype),
        )  # None: the loss keeps the dtype it was computed in
    return report
