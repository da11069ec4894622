"""`smoldist train` with a probe: what precision the engine really got, read from the live objects.

    accelerate launch --config_file CONFIG --num_processes 1 bench/gpu/engine_probe.py RECIPE PROBE.json

Runs smoldist.train.run.run(RECIPE) unchanged, with one callback added to its trainer: at the first optimizer
step it writes PROBE.json with the dtype of the master weights (the trainable parameters; DeepSpeed: its
optimizer's copy), the dtype a linear layer computed
in, and, per engine, FSDP2's MixedPrecisionPolicy (from every fully_shard module's state) or DeepSpeed's
communication / gradient-accumulation dtypes and the config dict the engine was built with. `fp32_reduce` says
whether gradients are reduced and accumulated in fp32 (the GPU-path issue's requirement; None: nothing to reduce).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

DS_KEYS = (
    "bf16",
    "fp16",
    "communication_data_type",
    "data_types",
    "gradient_accumulation_steps",
    "zero_optimization",
    "gradient_clipping",
    "train_micro_batch_size_per_gpu",
)


def dtype_name(d) -> str | None:
    return None if d is None else str(d).removeprefix("torch.")


def fsdp2_policies(model) -> list[dict]:
    """The distinct MixedPrecisionPolicy of every fully_shard (FSDP2) module in `model`."""
    seen = []
    for module in model.modules():
        get_state = getattr(module, "_get_fsdp_state", None)
        if get_state is None:
            continue
        mp = get_state()._mp_policy
        policy = {
            "param_dtype": dtype_name(mp.param_dtype),
            "reduce_dtype": dtype_name(mp.reduce_dtype),
            "output_dtype": dtype_name(mp.output_dtype),
            "cast_forward_inputs": mp.cast_forward_inputs,
        }
        if policy not in seen:
            seen.append(policy)
    return seen


def fsdp2_reduces_in_fp32(policies: list[dict], master_dtype: str) -> bool:
    """reduce_dtype None means: reduce in param_dtype, or in the master dtype when that is None too."""
    return bool(policies) and all(
        (p["reduce_dtype"] or p["param_dtype"] or master_dtype) == "float32" for p in policies
    )


def deepspeed_master_dtype(engine) -> str | None:
    """The dtype of the optimizer's own weight copy: under bf16 DeepSpeed's module holds bf16 weights and its ZeRO
    optimizer the fp32 masters (stage 1/2: single_partition_of_fp32_groups; stage 3: fp32_partitioned_groups_flat)."""
    opt = engine.optimizer
    for attr in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat", "fp32_groups_flat_partition"):
        groups = getattr(opt, attr, None)
        if groups:
            return dtype_name(groups[0].dtype)
    return None


def deepspeed_precision(engine) -> dict:
    model_dtype, accum_dtype = engine.get_data_types()
    raw = getattr(engine._config, "_param_dict", {}) or {}
    return {
        "optimizer_master_dtype": deepspeed_master_dtype(engine),
        "communication_data_type": dtype_name(engine.communication_data_type),
        "model_dtype": dtype_name(model_dtype),
        "grad_accum_dtype": dtype_name(accum_dtype),
        "zero_stage": engine.zero_optimization_stage(),
        "bf16_enabled": engine.bfloat16_enabled(),
        "config": {k: raw[k] for k in DS_KEYS if k in raw},
    }


def probe(trainer) -> dict:
    model = trainer.model_wrapped
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    masters = sorted({dtype_name(p.dtype) for p in trainable})
    out = {
        "engine_class": type(model).__name__,
        "mixed_precision": trainer.accelerator.mixed_precision,
        "master_dtypes": masters,
        "compute_dtype": getattr(trainer, "seen_compute_dtype", None),
        "loss_dtype": getattr(trainer, "seen_loss_dtype", None),  # what the engine's forward returned to TRL
        "accumulation": trainer.args.gradient_accumulation_steps,
        "cuda": torch.cuda.is_available(),
    }
    engine = getattr(trainer, "deepspeed", None) or (model if hasattr(model, "get_data_types") else None)
    policies = fsdp2_policies(trainer.model)
    if engine is not None:
        ds = deepspeed_precision(engine)
        out["deepspeed"] = ds
        out["master_dtypes"] = [ds["optimizer_master_dtype"]]  # the module's own weights are bf16 under bf16
        out["fp32_reduce"] = ds["communication_data_type"] == "float32" and ds["grad_accum_dtype"] == "float32"
    elif policies:
        out["fsdp2_mp_policies"] = policies
        out["fp32_reduce"] = fsdp2_reduces_in_fp32(policies, masters[0] if masters else "float32")
    else:  # one process, no engine: the fp32 masters' own .grad accumulates (nothing is reduced)
        out["fp32_reduce"] = None
    return out


class PrecisionProbe(TrainerCallback):
    def __init__(self, trainer, path: Path):
        self.trainer, self.path, self.hook = trainer, path, None

    def on_train_begin(self, args, state, control, **kwargs):
        linear = next(m for m in self.trainer.model.modules() if isinstance(m, torch.nn.Linear))

        def seen(module, inputs, output):
            self.trainer.seen_compute_dtype = dtype_name(output.dtype)
            self.hook.remove()

        self.hook = linear.register_forward_hook(seen)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1 and self.trainer.is_world_process_zero():
            self.path.write_text(json.dumps(probe(self.trainer), indent=2))


def main(recipe_path: str, probe_path: str) -> None:
    import smoldist.train.run as smoldist_run
    from smoldist.config import load_recipe

    class ProbedTrainer(smoldist_run.SmoldistTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(PrecisionProbe(self, Path(probe_path)))

        def compute_loss(self, model, inputs, *args, **kwargs):
            out = super().compute_loss(model, inputs, *args, **kwargs)
            if model.training and not hasattr(self, "seen_loss_dtype"):
                self.seen_loss_dtype = dtype_name((out[0] if isinstance(out, tuple) else out).dtype)
            return out

    smoldist_run.SmoldistTrainer = ProbedTrainer  # run() builds its trainer from the name in its own module
    smoldist_run.run(load_recipe(recipe_path))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
