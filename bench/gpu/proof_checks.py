"""The checks of proof.sh that are not engine runs (those are bench/gpu/engines.py), one per subcommand:

    python bench/gpu/proof_checks.py env               # device, imported library versions, varlen_attn signature
    python bench/gpu/proof_checks.py kernels           # tests/model/test_gpu.py: varlen kernel, packed == docs
    python bench/gpu/proof_checks.py train-alike       # tests/model/test_gpu.py: varlen and sdpa train alike
    python bench/gpu/proof_checks.py flops             # one 135M step at 4096 under FlopCounterMode vs FlopModel
    python bench/gpu/proof_checks.py eval-memory       # peak memory of `smoldist eval RUN --loss` at 4096

Each writes checks.<subcommand> of $RESULTS (bench/gpu/results.py). SMOKE=1: CPU, tiny shapes; the CUDA-only
parts record `skipped: no cuda`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from engines import EVAL_RUN, SHAPE_135M, SHAPE_TINY  # noqa: E402  (bench/gpu/engines.py)
from results import LIBS, SKIPPED_NO_CUDA, record, results_path, unmet_requirements  # noqa: E402

WORK = Path(os.environ.get("WORK", "/tmp/smoldist-gpu-work"))


def installed_versions() -> dict:
    """Each library's installed version from its metadata alone: no import (a cold import of the carried
    `--no-compile` wheels can take longer than this step's limit)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for lib in LIBS:
        try:
            versions[lib] = version(lib)
        except PackageNotFoundError as e:
            versions[lib] = f"missing: {e}"
    return versions


def env() -> int:
    import importlib
    import inspect

    versions = installed_versions()
    record(results_path(), "env", {"ok": None, "stage": "versions read, importing"}, top={"versions": versions})
    print("installed: " + ", ".join(f"{k} {v}" for k, v in versions.items()), flush=True)

    import torch

    where = {}
    for lib in LIBS:
        try:
            where[lib] = str(Path(importlib.import_module(lib).__file__).parent)
        except ImportError as e:
            versions[lib] = f"missing: {e}"
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "cpu"
    try:
        from torch.nn.attention.varlen import varlen_attn

        signature = str(inspect.signature(varlen_attn))
    except ImportError as e:
        signature = f"missing: {e}"
    needed = [lib for lib in LIBS if lib != "triton" or cuda]  # triton: only where CUDA is
    entry = {
        "ok": all(not versions[lib].startswith("missing") for lib in needed),
        "python": sys.version.split()[0],
        "imported_from": where,
        "unmet_requirements": unmet_requirements(),
        "varlen_attn_signature": signature,
        "figures": ["device"],
        "stage": "imported",
        "device": device,
        "cuda_capability": list(torch.cuda.get_device_capability()) if cuda else None,
        "device_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
    }
    record(results_path(), "env", entry, top={"device": device, "versions": versions})
    print(f"device {device}; " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"\nvarlen_attn{signature}")
    return 0 if entry["ok"] else 1


def kernels(name: str = "kernels", select: str = "not engine and not train_the_135m") -> int:
    """gpu-marked tests of tests/model/test_gpu.py (engines.py runs the engines, with the precision probe), one
    result per test; `select` is pytest's -k."""
    import torch

    xml = WORK / f"{name}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "gpu",
        "tests/model/test_gpu.py",
        "-k",
        select,
        "-p",
        "no:cacheprovider",
        f"--junitxml={xml}",
    ]
    rc = subprocess.run(cmd, cwd=REPO).returncode
    tests = {}
    for case in ET.parse(xml).getroot().iter("testcase") if xml.is_file() else ():
        failed = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        tests[case.get("name")] = {
            "ok": None if skipped is not None else failed is None,
            "seconds": round(float(case.get("time", 0)), 2),
            **({"error": failed.get("message", "")[:500]} if failed is not None else {}),
        }
    ran = [t for t in tests.values() if t["ok"] is not None]
    entry = {
        "tests": tests,
        "ok": bool(ran) and all(t["ok"] for t in ran) and rc == 0,
        "figures": ["passed"],
        "passed": f"{sum(bool(t['ok']) for t in ran)}/{len(tests)}",
    }
    if not torch.cuda.is_available():
        entry.update(ok=None, skipped=SKIPPED_NO_CUDA)
    record(results_path(), name, entry)
    return 0 if entry["ok"] is not False else 1


def matmul_flop(acc_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """acc += a @ b: 2*m*k*n (torch's table counts addmm but not its in-place form)."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def flops() -> int:
    """One optimizer step of the 135M shape at 4096 (one row, varlen) through smoldist's trainer, counted by
    torch.utils.flop_counter.FlopCounterMode, against smoldist.train.throughput.FlopModel on the same batch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import smoldist.train.run as smoldist_run
    from smoldist.config.load import build_recipe
    from smoldist.train.throughput import FlopModel, batch_stats

    seen = {}

    class CountedTrainer(smoldist_run.SmoldistTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            # TRL's chunked LM head accumulates its gradients with in-place addmm_, which torch's table leaves out
            counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: matmul_flop})
            with counter:
                loss = super().training_step(model, inputs, num_items_in_batch)
            seen.update(
                counts=counter.get_flop_counts().get("Global", {}),
                total=counter.get_total_flops(),
                stats=batch_stats(inputs),
                flop_model=self.meter.flop_model if self.meter else FlopModel.of(self.model),
                cfg=self.model.config,
            )
            return loss

    smoldist_run.SmoldistTrainer = CountedTrainer
    cuda = torch.cuda.is_available()
    seq_len = 4096 if cuda else 256
    raw = {
        "model": {
            "init": dict(SHAPE_135M if cuda else SHAPE_TINY),
            "tokenizer": "pkg:demo/tokenizer",
            "chat_template": "smollm2",
            "dtype": "bfloat16" if cuda else "float32",
            "attn_implementation": "varlen",
        },
        "data": {
            "sources": [{"path": "pkg:demo/conversations.jsonl", "format": "messages"}],
            "seq_len": seq_len,
            "eval_fraction": 0.0,
            "store": str(WORK / "store"),
            "num_proc": 1,
        },
        "train": {
            "output_dir": str(WORK / "flops"),
            "max_steps": 1,
            "per_device_train_batch_size": 1,
            "save_strategy": "no",
            "logging_steps": 1,
            "activation_checkpointing": False,
            "dataloader_num_workers": 0,
            "use_cpu": not cuda,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    t = time.perf_counter()
    smoldist_run.run(build_recipe(raw, name="flops"))
    real, trained, sum_sq = seen["stats"]
    fm, cfg = seen["flop_model"], seen["cfg"]
    by_op = {str(op): int(n) for op, n in sorted(seen["counts"].items(), key=lambda kv: -kv[1])}
    # attention: the SDPA / flash / varlen ops, and bmm (SDPA's math path on CPU; Llama's linears are mm/addmm)
    attn_counted = sum(n for op, n in by_op.items() if "attention" in op or "attn" in op or op == "aten.bmm")
    attn_model = 12.0 * fm.layers * fm.attn_width * sum_sq
    linear_model = fm.flops(real, sum_sq, trained) - attn_model  # what MFU charges, head on trained tokens or all
    head_per_token = 6.0 * cfg.vocab_size * cfg.hidden_size
    linear_counted = seen["total"] - attn_counted
    # MFU is honest if FlopModel does not charge more than was computed (the count also holds TRL's recompute of
    # the head's logits in its backward, 2*V*D per scored token, which MFU rightly leaves out)
    overstated = linear_model / linear_counted
    scored = trained if fm.head_on_trained_tokens else real
    with_recompute = (linear_model + 2.0 * cfg.vocab_size * cfg.hidden_size * scored) / linear_counted
    try:
        from trl.kernels.chunked_logprob import _use_triton

        fused_triton = _use_triton(torch.device("cuda" if cuda else "cpu"))
    except ImportError:
        fused_triton = None
    entry = {
        "seq_len": seq_len,
        "real_tokens": real,
        "trained_tokens": trained,
        "sum_sq_lengths": sum_sq,
        "counted_total": seen["total"],
        "counted_by_op": by_op,
        "counted_attention": attn_counted,
        "flop_model_total": fm.flops(real, sum_sq, trained),
        "flop_model_linear": linear_model,
        "flop_model_attention": attn_model,
        "flop_model_head_on_trained_tokens": fm.head_on_trained_tokens,
        "counted_linear": linear_counted,
        "flop_model_linear_over_counted": overstated,
        "lm_head_flops_per_token_6vd": head_per_token,
        "trl_fused_lm_head_triton": fused_triton,
        "step_s": round(time.perf_counter() - t, 1),
        "flop_model_with_head_recompute_over_counted": with_recompute,
        "figures": [
            "flop_model_linear_over_counted",
            "flop_model_with_head_recompute_over_counted",
            "trl_fused_lm_head_triton",
        ],
        "ok": overstated <= 1.0 and abs(with_recompute - 1.0) <= 0.02,
    }
    record(results_path(), "flops", entry)
    print({k: v for k, v in entry.items() if k != "counted_by_op"})
    return 0 if entry["ok"] else 1


def eval_memory() -> int:
    """`smoldist eval RUN --loss` (default batch size) on the single_gpu engine run (seq_len 4096), in-process so
    that the CUDA allocator's peak can be read after it."""
    import torch

    from smoldist.cli import main as smoldist_main
    from smoldist.train.throughput import peak_memory_gib

    run_dir = WORK / "engines" / EVAL_RUN
    if not (run_dir / "recipe.yaml").is_file():
        record(results_path(), "eval-memory", {"ok": False, "error": f"no run at {run_dir} (engine-{EVAL_RUN} failed)"})
        return 1
    out = WORK / "eval-loss.json"
    t = time.perf_counter()
    rc = smoldist_main(["eval", str(run_dir), "--loss", "--out", str(out)])
    res = json.loads(out.read_text()) if out.is_file() else {}
    entry = {
        "exit": rc,
        "eval_loss": res.get("eval_loss"),
        "rows": res.get("rows"),
        "tokens": res.get("tokens"),
        "peak_memory_gib": peak_memory_gib(),
        "peak_is": "cuda allocated" if torch.cuda.is_available() else "process RSS",
        "eval_s": round(time.perf_counter() - t, 1),
        "ok": rc == 0 and bool(res),
        "figures": ["peak_memory_gib", "eval_loss"],
    }
    record(results_path(), "eval-memory", entry)
    print(entry)
    return 0 if entry["ok"] else 1


CHECKS = {
    "env": env,
    "kernels": kernels,
    "train-alike": lambda: kernels("train-alike", "train_the_135m_shape_alike"),
    "flops": flops,
    "eval-memory": eval_memory,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: proof_checks.py CHECK   (CHECK: {', '.join(CHECKS)})")
    sys.exit(CHECKS[sys.argv[1]]())
