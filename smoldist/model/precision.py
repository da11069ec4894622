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
