"""One engine case of proof.sh: 3 optimizer steps of the 135M shape under `accelerate launch` (1 process), the
saved model reloaded with the same logits, and the precision the engine really got (bench/gpu/engine_probe.py).

    python bench/gpu/engines.py CASE          # CASE: single_gpu, fsdp2, zero2, zero3, fsdp2-lora, zero3-lora

Writes checks.engine-CASE of $RESULTS. `ok` needs: exit 0, the engine that ran is the one asked for, the reloaded
model's probe logits equal the ones the trainer saw, and gradients reduced / accumulated in fp32 where anything is
reduced (fp32_reduce). SMOKE=1 (CPU dry run): tiny shape, the CPU DeepSpeed configs; FSDP through accelerate does
not run on CPU (it silently becomes DDP), so fsdp2 cases record `skipped: no cuda`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from results import SKIPPED_NO_CUDA, record, results_path, smoke  # noqa: E402  (bench/gpu/results.py)

SHAPE_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 4096,
}
SHAPE_TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}
# what a case's model differs in: fsdp2 an untied LM head (accelerate gives lm_head its own fully_shard unit and TRL's
# fused head reads its weight without calling it), zero2 a sliding window (Mistral: every layer local)
VARIANTS = {
    "fsdp2": {"tie_word_embeddings": False},
    "zero2": {"model_type": "mistral", "sliding_window": 512},
}
ACCUMULATION = 2  # micro-batches per optimizer step: the fp32 accumulation path runs, not only its config
# case -> (accelerate config on GPU, on CPU (None: cannot run there), engine names that may run, LoRA)
CASES = {
    "single_gpu": ("single_gpu", "single_gpu", {"single"}, False),
    "fsdp2": ("fsdp2", None, {"fsdp2"}, False),
    "zero2": ("zero2", "cpu_zero2", {"deepspeed-zero2"}, False),
    "zero3": ("zero3", "cpu_zero3", {"deepspeed-zero3"}, False),
    "fsdp2-lora": ("fsdp2", None, {"fsdp2"}, True),
    "zero3-lora": ("zero3", "cpu_zero3", {"deepspeed-zero3"}, True),
}
EVAL_RUN = "single_gpu"  # its run (seq_len 4096, an eval split) is what proof.sh's eval-memory step scores


def recipe(case: str, work: Path) -> dict:
    lora = CASES[case][3]
    seq_len = 256 if smoke() else (4096 if case == EVAL_RUN else 2048)
    variant = dict(VARIANTS.get(case, {}))
    if smoke() and "sliding_window" in variant:
        variant["sliding_window"] = 64  # shorter than the smoke's documents too: the window is really used
    rows = 2
    raw = {
        "model": {
            "init": dict(SHAPE_TINY if smoke() else SHAPE_135M, **variant),
            "tokenizer": "pkg:demo/tokenizer",
            "chat_template": "smollm2",
            "dtype": "float32" if smoke() else "bfloat16",
            "attn_implementation": "auto",
        },
        "data": {
            "sources": [{"path": "pkg:demo/conversations.jsonl", "format": "messages"}],
            "seq_len": seq_len,
            "eval_fraction": 0.1 if case == EVAL_RUN else 0.0,
            "store": str(work / "store"),
            "num_proc": 1,
        },
        "train": {
            "output_dir": str(work / case),
            "max_steps": 3,
            "per_device_train_batch_size": rows,
            "global_batch_tokens": ACCUMULATION * rows * seq_len,  # one process: accumulation 2
            "learning_rate": 1e-4,
            "logging_steps": 1,
            "save_strategy": "no",
            "eval_strategy": "no",
            "activation_checkpointing": False,
            "seed": 0,
            "dataloader_num_workers": 0,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    if lora:  # an adapter needs a saved base to reload over: the same random init, saved once
        raw["model"] = {
            "name_or_path": str(random_base(raw["model"], work / f"base-{seq_len}")),
            "chat_template": "smollm2",
            "dtype": raw["model"]["dtype"],
            "attn_implementation": raw["model"]["attn_implementation"],
            "lora": {"r": 8, "alpha": 16},
        }
    return raw


def random_base(model: dict, path: Path) -> Path:
    """The randomly initialised model of `model` (a recipe's model section), saved as an HF directory."""
    if not (path / "config.json").is_file():
        from smoldist.config import ModelConfig
        from smoldist.config.load import build_dataclass
        from smoldist.model.build import build_model, load_tokenizer

        cfg = build_dataclass(ModelConfig, dict(model, dtype="float32"), "model")
        tok = load_tokenizer(cfg)
        build_model(cfg, tok).save_pretrained(path)
        tok.save_pretrained(path)
    return path


def reload_logits(run_dir: Path, lora: bool) -> list[float]:
    import torch

    from smoldist.distributed.fingerprint import PROBE_TOKENS
    from smoldist.model.lora import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(str(run_dir), torch.bfloat16 if device == "cuda" else torch.float32).to(device).eval()
    ids = torch.arange(1, PROBE_TOKENS + 1, device=device).unsqueeze(0) % model.config.vocab_size
    with torch.no_grad():
        return model(input_ids=ids).logits[0, :, :4].float().flatten().tolist()


def close(a: list[float], b: list[float], tol: float = 2e-2) -> float:
    """Largest |a - b| / (1 + |b|): bf16 save and reload round each logit at ~1e-2."""
    return max((abs(x - y) / (1 + abs(y)) for x, y in zip(a, b, strict=True)), default=float("inf"))


def main(case: str) -> int:
    name = f"engine-{case}"
    gpu_config, cpu_config, engines, lora = CASES[case]
    config = cpu_config if smoke() else gpu_config
    if config is None:
        record(results_path(), name, {"ok": None, "skipped": SKIPPED_NO_CUDA})
        print(f"{name}: skipped (FSDP through accelerate needs CUDA)")
        return 0
    work = Path(os.environ.get("WORK", "/tmp/smoldist-gpu-work")) / "engines"
    work.mkdir(parents=True, exist_ok=True)
    recipe_path, probe_path, run_dir = work / f"{case}.yaml", work / f"{case}.probe.json", work / case
    recipe_path.write_text(yaml.safe_dump(recipe(case, work), sort_keys=False))
    probe_path.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate_configs" / f"{config}.yaml"),
        "--num_processes",
        "1",
        "--main_process_port",
        "29517",
    ]
    if smoke() and case == "single_gpu":
        cmd += ["--cpu", "--mixed_precision", "no"]
    cmd += [str(HERE / "engine_probe.py"), str(recipe_path), str(probe_path)]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, WANDB_MODE="disabled"))
    entry = {"config": config, "lora": lora, "train_s": round(time.perf_counter() - t, 1), "exit": p.returncode}
    if probe_path.is_file():
        entry["precision"] = json.loads(probe_path.read_text())
    rank_file = run_dir / "ranks" / "rank-0.json"
    if p.returncode or not rank_file.is_file():
        record(results_path(), name, dict(entry, ok=False, error=f"training exit {p.returncode}"))
        return 1
    rank = json.loads(rank_file.read_text())
    entry.update(engine=rank["engine"], world_size=rank["world_size"], attention=rank.get("attention"))
    entry["reload_max_rel_diff"] = close(reload_logits(run_dir, lora), rank["probe_logits"])
    precision = entry.get("precision", {})
    masters = precision.get("master_dtypes", [])
    failed = [
        why
        for why, bad in (
            (f"engine {rank['engine']}, not {'/'.join(sorted(engines))}", rank["engine"] not in engines),
            (f"world size {rank['world_size']}", rank["world_size"] != 1),
            (f"loss returned in {precision.get('loss_dtype')}, not float32", precision.get("loss_dtype") != "float32"),
            (
                f"gradient accumulation {precision.get('accumulation')}, not {ACCUMULATION}",
                precision.get("accumulation") != ACCUMULATION,
            ),
            (f"reloaded logits differ by {entry['reload_max_rel_diff']:.3g}", entry["reload_max_rel_diff"] >= 2e-2),
            ("gradients reduced or accumulated below fp32 (issue 21)", precision.get("fp32_reduce") is False),
            (f"master weights {masters}, not fp32", "float32" not in masters),
            (
                f"computed in {precision.get('compute_dtype')}, not bf16",
                not smoke() and precision.get("compute_dtype") != "bfloat16",
            ),  # the recipes' bfloat16: fp32 masters, bf16 autocast
        )
        if bad
    ]
    entry.update(ok=not failed, error="; ".join(failed) or None, figures=["engine", "reload_max_rel_diff"])
    record(results_path(), name, entry)
    print(f"{name}: {json.dumps(entry)}")
    return 0 if entry["ok"] else 1


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.exit(f"usage: engines.py CASE   (CASE: {', '.join(CASES)})")
    sys.exit(main(sys.argv[1]))
