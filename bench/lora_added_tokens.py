"""LoRA with tokens added to a large vocabulary: peak memory and step time against plain LoRA, real Gemma 3 270M, CPU.

    python bench/lora_added_tokens.py --model ~/.cache/smoldist/gemma-3-270m          # tests/real_model.py builds it

Two runs of `python -m smoldist.train`, each its own process, on the same gsm8k sample (tests/fixtures), LoRA r 8:
  lora        Gemma's own chat template: no token added, the embedding (262,144 x 640, tied) frozen;
  lora+added  chatml: <|im_start|> and <|im_end|> added, their two rows trained (peft's trainable tokens, run by
              smoldist/model/added_rows.py: no copy of the table, no gradient of its size).
Reported: step time over the steps after the first (smoldist's perf/step_time_s) and the process's peak RSS
(perf/peak_memory_gib on CPU), as a table and JSON. Goal: lora+added within 10% of lora in both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "fixtures" / "gsm8k_train_sample.jsonl"
CASES = {"lora": "tokenizer", "lora+added": "chatml"}


def recipe(model: Path, template: str, work: Path, steps: int, seq_len: int) -> dict:
    return {
        "model": {
            "name_or_path": str(model),
            "chat_template": template,
            "dtype": "float32",
            "lora": {"r": 8, "alpha": 16},
        },
        "data": {
            "sources": [{"path": str(SAMPLE), "format": "gsm8k"}],
            "seq_len": seq_len,
            "overflow": "truncate",
            "store": str(work / "store"),
            "num_proc": 1,
        },
        "train": {
            "output_dir": str(work / template),
            "max_steps": steps,
            "per_device_train_batch_size": 1,
            "logging_steps": 1,
            "save_strategy": "no",
            "dataloader_num_workers": 0,
            "seed": 0,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }


def run(name: str, raw: dict, work: Path) -> dict:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "smoldist.train", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1800,
        env=dict(os.environ, TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled"),
    )
    if p.returncode:
        return {"error": f"exit {p.returncode}", "tail": (p.stdout + p.stderr)[-2000:]}
    state = json.loads((Path(raw["train"]["output_dir"]) / "trainer_state.json").read_text())
    logs = [h for h in state["log_history"] if "perf/step_time_s" in h][1:]  # the first step warms up
    return {
        "step_s": sum(h["perf/step_time_s"] for h in logs) / len(logs),
        "peak_rss_gib": max(h["perf/peak_memory_gib"] for h in logs),
        "tokens_per_step": sum(h["perf/tokens_per_s_per_device"] * h["perf/step_time_s"] for h in logs) / len(logs),
        "timed_steps": len(logs),
        "process_s": round(time.perf_counter() - t, 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path.home() / ".cache" / "smoldist" / "gemma-3-270m")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "lora_added_tokens.json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="smoldist-lora-added-"))
    results = {
        name: run(name, recipe(args.model, t, work, args.steps, args.seq_len), work) for name, t in CASES.items()
    }
    print(f"{'case':12s} {'step s':>8s} {'peak RSS GiB':>13s} {'tok/step':>9s}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:12s} FAILED {r['error']}\n{r['tail']}")
            continue
        print(f"{name:12s} {r['step_s']:8.2f} {r['peak_rss_gib']:13.2f} {r['tokens_per_step']:9.0f}")
    if all("error" not in r for r in results.values()):
        a, b = results["lora"], results["lora+added"]
        ratio = {"step_s": b["step_s"] / a["step_s"], "peak_rss_gib": b["peak_rss_gib"] / a["peak_rss_gib"]}
        results["ratio_added_over_plain"] = ratio
        print(f"lora+added / lora: step time {ratio['step_s']:.2f}x, peak RSS {ratio['peak_rss_gib']:.2f}x")
    results["settings"] = {"steps": args.steps, "seq_len": args.seq_len, "model": args.model.name}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
