"""One measured training run of one path, in a process of its own (started by bench/train_throughput.py).

    python bench/throughput_paths.py SPEC.json RESULT.json

Paths, all on the same corpus, tokenizer, chat template, randomly initialised model and SFTConfig knobs:
  trl-nopack  plain TRL SFTTrainer on the messages, as the smol-course uses it: no packing, each batch padded
              to its longest conversation, assistant_only_loss=True with smoldist's smollm2 template;
  trl-bfd     the same with packing=True, packing_strategy="bfd" (TRL then trains padding-free);
  smoldist    smoldist.train.run(recipe) on the store that `smoldist prepare` built (padding-free from seq_lengths).

All three are measured by the same code. `Measured` (a trainer mixin) keeps a device copy of the labels,
position_ids and attention_mask of every micro-batch of the timed steps; `Timer` (a callback) waits for the
device and reads the clock at the end of the last warm-up step and of the last timed step, and resets the
peak-memory counter at the start of the window. Real / trained tokens and FLOPs are counted after training
with smoldist.train.throughput.batch_stats and FlopModel, so the counting adds no device sync inside the window.
For smoldist the TRL-independent `perf/*` values it logs itself are read back for the same steps as a cross-check.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from smoldist.train.throughput import FlopModel, batch_stats, device_peak_tflops, peak_memory_gib

KEEP = ("labels", "position_ids", "attention_mask")  # all batch_stats needs; labels.numel() = tokens incl. padding


def cuda_ready() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


class Timer(TrainerCallback):
    """Clock (after a device sync) at the end of optimizer step `warmup` and of step `warmup + steps`."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.t0 = self.t1 = None
        self.peak_gb = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in (self.warmup, self.warmup + self.steps) and cuda_ready():
            torch.cuda.synchronize()
        if state.global_step == self.warmup:
            if cuda_ready():
                torch.cuda.reset_peak_memory_stats()  # peak of the timed steps (on CPU: the process's peak RSS)
            self.t0 = time.perf_counter()
        elif state.global_step == self.warmup + self.steps:
            self.t1 = time.perf_counter()
            self.peak_gb = peak_memory_gib()


class Measured:
    """Mixin for SFTTrainer subclasses: keeps the micro-batches of the timed optimizer steps."""

    def attach(self, warmup: int, steps: int) -> None:
        self.timer, self.window = Timer(warmup, steps), []
        self.flop_model = FlopModel.of(self.model)
        self.add_callback(self.timer)

    def training_step(self, model, inputs, num_items_in_batch=None):
        # global_step counts finished optimizer steps: micro-batches of step k+1 run while it is k
        if self.timer.warmup <= self.state.global_step < self.timer.warmup + self.timer.steps:
            kept = {k: inputs[k].detach().clone() for k in KEEP if torch.is_tensor(inputs.get(k))}
            self.window.append((self.state.global_step, kept))
        return super().training_step(model, inputs, num_items_in_batch)

    def summary(self, peak_tflops: float | None) -> dict:
        t = self.timer
        if t.t0 is None or t.t1 is None:
            raise RuntimeError(
                f"training stopped at step {self.state.global_step} before warm-up + timed steps "
                f"({t.warmup} + {t.steps}) finished"
            )
        real = trained = sum_sq = padded = 0
        per_step: dict[int, list[int]] = {}
        for step, batch in self.window:
            r, tr, sq = batch_stats(batch)
            real, trained, sum_sq, padded = real + r, trained + tr, sum_sq + sq, padded + batch["labels"].numel()
            counts = per_step.setdefault(step + 1, [0, 0])
            counts[0], counts[1] = counts[0] + r, counts[1] + tr
        secs = t.t1 - t.t0
        flops = self.flop_model.flops(real, sum_sq)
        return {
            "timed_steps": t.steps,
            "warmup_steps": t.warmup,
            "seconds": secs,
            "tokens_per_s": real / secs,
            "trained_tokens_per_s": trained / secs,
            "tflops": flops / secs / 1e12,
            "mfu": flops / secs / (peak_tflops * 1e12) if peak_tflops else None,
            "step_time_s": secs / t.steps,
            "peak_memory_gib": t.peak_gb,
            "tokens_per_step": real / t.steps,
            "trained_tokens_per_step": trained / t.steps,
            "padded_tokens_per_step": padded / t.steps,
            "padding_fraction": 1 - real / padded if padded else 0.0,
            "micro_batches": len(self.window),
            "n_matmul_params": self.flop_model.n_matmul_params,
            "per_step": {
                "real_tokens": [c[0] for _, c in sorted(per_step.items())],
                "trained_tokens": [c[1] for _, c in sorted(per_step.items())],
            },
        }


def checkpointing_kwargs(on: bool) -> dict:
    """Newer transformers call it activation_checkpointing (gradient_checkpointing: deprecated alias); older, only
    the latter."""
    import dataclasses

    from trl import SFTConfig

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    return {k: on for k in ("activation_checkpointing", "gradient_checkpointing") if k in names}


def train_kwargs(spec: dict, batch: int) -> dict:
    """SFTConfig keys shared by all three paths (smoldist gets them through its recipe's train section)."""
    kw = dict(
        output_dir=spec["output_dir"],
        max_steps=spec["warmup"] + spec["steps"],
        per_device_train_batch_size=batch,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        bf16=not spec["cpu"],
        fp16=False,
    )
    if spec["cpu"]:
        kw["use_cpu"] = True
    if spec["compile"]:
        kw["torch_compile"] = True
    if spec["liger"]:
        kw["use_liger_kernel"] = True
    return kw


def dataset_totals(ds) -> dict:
    """Rows, tokens and trained tokens of a prepared (tokenized, maybe packed) TRL dataset."""
    import numpy as np

    ids = ds.data.column("input_ids").combine_chunks()
    labels = np.asarray(ds.data.column("labels").combine_chunks().flatten())
    return {"rows": len(ds), "tokens": len(ids.flatten()), "trained_tokens": int((labels != -100).sum())}


def run_trl(spec: dict, packing: bool) -> tuple[Measured, dict]:
    import datasets
    from trl import SFTConfig, SFTTrainer

    from smoldist.config import ModelConfig
    from smoldist.config.load import build_dataclass
    from smoldist.data.templates import load_template
    from smoldist.model.build import build_model, load_tokenizer

    model_cfg = build_dataclass(ModelConfig, spec["recipe"]["model"], "model")
    tok = load_tokenizer(model_cfg)
    tok.chat_template = load_template("smollm2")  # the template smoldist built the store with (generation markers)
    model = build_model(model_cfg, tok)  # same init (seed, dtype, attention) as smoldist's path
    ds = datasets.load_dataset("json", data_files=spec["corpus"], split="train")
    batch = spec["rows"] if packing else spec["nopack_batch"]
    pack = {"packing": True, "packing_strategy": "bfd"} if packing else {"packing": False}
    args = SFTConfig(
        **train_kwargs(spec, batch),
        **checkpointing_kwargs(spec["activation_checkpointing"]),
        **pack,
        max_length=spec["seq_len"],
        assistant_only_loss=True,
        dataset_num_proc=spec["procs"],
        report_to="none",
    )

    class BenchTRL(Measured, SFTTrainer):
        pass

    trainer = BenchTRL(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.attach(spec["warmup"], spec["steps"])
    extra = {"batch_size": batch, "dataset": dataset_totals(trainer.train_dataset)}
    trainer.train()
    return trainer, extra


def run_smoldist(spec: dict) -> tuple[Measured, dict]:
    import smoldist.train.run as smoldist_run
    from smoldist.config.load import build_recipe

    made = []

    class BenchSmoldist(Measured, smoldist_run.SmoldistTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.attach(spec["warmup"], spec["steps"])
            made.append(self)

    smoldist_run.SmoldistTrainer = BenchSmoldist  # run() builds its trainer from the name in its own module
    raw = dict(spec["recipe"])
    raw["train"] = dict(train_kwargs(spec, spec["rows"]), gradient_checkpointing=spec["activation_checkpointing"])
    raw["tracking"] = {"wandb": {"mode": "disabled"}, "peak_tflops": spec["peak_tflops"]}
    smoldist_run.run(build_recipe(raw, name="bench"))
    trainer = made[0]
    return trainer, {"batch_size": spec["rows"], "dataset": spec["store_split"], "logged": logged_perf(trainer, spec)}


def logged_perf(trainer, spec: dict) -> dict:
    """smoldist's own perf/* logs over the timed steps (logging_steps=1: one window per optimizer step)."""
    lo, hi = spec["warmup"], spec["warmup"] + spec["steps"]
    logs = [h for h in trainer.state.log_history if "perf/step_time_s" in h and lo < h["step"] <= hi]
    secs = sum(h["perf/step_time_s"] for h in logs)
    if not logs or secs <= 0:
        return {}
    out = {
        "steps": len(logs),
        "seconds": secs,
        "tokens_per_s": sum(h["perf/tokens_per_s_per_device"] * h["perf/step_time_s"] for h in logs) / secs,
        "trained_tokens_per_s": sum(h["perf/trained_tokens_per_s_per_device"] * h["perf/step_time_s"] for h in logs)
        / secs,
        "data_wait_fraction": sum(h["perf/data_wait_fraction"] * h["perf/step_time_s"] for h in logs) / secs,
    }
    if all("perf/mfu" in h for h in logs):
        out["mfu"] = sum(h["perf/mfu"] * h["perf/step_time_s"] for h in logs) / secs
    return out


def versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "trl", "datasets", "accelerate")}


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    spec["cpu"] = spec["cpu"] or not torch.cuda.is_available()  # GPU mode on a machine without one: still runs, on CPU
    peak = device_peak_tflops(spec["peak_tflops"])
    t = time.perf_counter()
    if spec["path"] == "smoldist":
        trainer, extra = run_smoldist(spec)
    else:
        trainer, extra = run_trl(spec, packing=spec["path"] == "trl-bfd")
    result = dict(
        trainer.summary(peak),
        **extra,
        path=spec["path"],
        peak_tflops=peak,
        process_s=time.perf_counter() - t,
        device=torch.cuda.get_device_name() if cuda_ready() else "cpu",
        versions=versions(),
    )
    Path(out_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
