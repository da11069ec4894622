"""DPO throughput: smoldist (packed pairs, reference log-probs once) vs TRL 1.16 DPOTrainer, one epoch, whole process.

    python bench/dpo_throughput.py --model ~/.cache/smoldist/SmolLM2-135M-Instruct --pairs 16 --seq-len 1024
    python bench/dpo_throughput.py --fill 1024,2048,4096 --pairs 2000     # packing only: fill and pairs per row
    python bench/dpo_throughput.py --init 135M --tokenizer DIR --pairs 1000 --rows 4 --trl-batch 8   # GPU (speed.sh)

Pairs are gsm8k-sized: the question as the prompt, its worked answer as chosen, the next problem's answer as
rejected (real GSM8K train records from --gsm8k). Each path runs one epoch over the same pairs in its own process,
timed from process start to exit (imports, tokenizing, the reference pass and saving included), same model, same
template (the model's own), no activation checkpointing, the same learning rate and beta; fp32 on CPU, and on a GPU
fp32 master weights under bf16 autocast in both tools. `--init SHAPE` trains a random-init model of one of
bench/train_throughput.py's shapes with `--tokenizer` (the GPU run: no real weights travel there) instead of --model:
  trl             DPOTrainer defaults: padded batches, the reference model run every step;
  trl-precompute  DPOTrainer with precompute_ref_log_probs=True (one reference pass before training);
  smoldist        `smoldist train` on a fresh store: prepare, reference pass, packed rows of --seq-len tokens;
  smoldist-sweep  a second `smoldist train` at twice the learning rate, as in a sweep: the store and its reference
                  log-probs are reused (TRL computes them again in every run).
TRL takes --trl-batch pairs a step; smoldist --rows packed rows a step (a row holds ~2.2 gsm8k pairs at 1024).
Without gsm8k (../shared) the pairs are synthetic word problems of the same shape (bench/prepare.py).
Tokens/s counts the real tokens of the pairs (both sequences, prompt included) over the whole-process time.
Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # bench/train_throughput.py: model shapes and the pair source
from train_throughput import SHAPES  # noqa: E402

PATHS = ("smoldist", "smoldist-sweep", "trl-precompute", "trl")
REAL_MODEL = Path.home() / ".cache" / "smoldist" / "SmolLM2-135M-Instruct"  # tests/real_model.py materialises it
TRL_PATHS = ("trl-precompute", "trl")


def write_pairs(gsm8k: Path, n: int, out: Path) -> Path:
    from train_throughput import bench_prepare_module

    qa = bench_prepare_module().qa_pool(gsm8k, n + 1, seed=0)[: n + 1]  # gsm8k, else synthetic of the same shape
    pairs = [{"prompt": q, "chosen": a, "rejected": qa[i + 1][1]} for i, (q, a) in enumerate(qa[:n])]
    out.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return out


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def random_init_model(shape: str, tokenizer: str, out: Path) -> Path:
    """A random-init model of one of train_throughput's shapes, saved with `tokenizer` and smoldist's smollm2 template
    as its own (both tools then render the pairs with the same template)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from smoldist.config import resolve_path
    from smoldist.data.templates import load_template

    tok = AutoTokenizer.from_pretrained(resolve_path(tokenizer))
    tok.chat_template = load_template("smollm2")
    cfg = dict(SHAPES[shape])
    cfg["vocab_size"] = max(cfg.get("vocab_size", 0), len(tok))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**cfg, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def smoldist_recipe(args, pairs: Path, work: Path, run: str = "smoldist-run", lr_scale: float = 1.0) -> Path:
    import yaml

    recipe = {
        "method": "dpo",
        "dpo": {"beta": args.beta, "loss_type": "sigmoid"},
        "model": {
            "name_or_path": str(args.model),
            "chat_template": "tokenizer",
            "dtype": "bfloat16" if cuda() else "float32",  # bf16: fp32 masters under bf16 autocast
            "attn_implementation": "auto",
        },
        "data": {
            "sources": [{"path": str(pairs), "format": "preference"}],
            "seq_len": args.seq_len,
            "overflow": "truncate",
            "store": str(work / "store"),
        },
        "train": {
            "output_dir": str(work / run),
            "num_train_epochs": 1,
            "per_device_train_batch_size": args.rows,
            "learning_rate": args.lr * lr_scale,
            "logging_steps": 1,
            "save_strategy": "no",
            "activation_checkpointing": False,
            "seed": 0,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    path = work / f"{run}.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))
    return path


def trl_worker(args) -> None:
    """One epoch of TRL's DPOTrainer over the pairs (conversational: TRL renders them with the model's template)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in Path(args.pairs).read_text().splitlines()]
    ds = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
    )
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    config = DPOConfig(
        output_dir=args.out_dir,
        beta=args.beta,
        learning_rate=args.lr,
        num_train_epochs=1,
        per_device_train_batch_size=args.trl_batch,
        max_length=args.seq_len,
        precompute_ref_log_probs=args.worker == "trl-precompute",
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),  # the model stays fp32: masters under bf16 autocast, as smoldist's
        activation_checkpointing=False,
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        seed=0,
    )
    DPOTrainer(model=model, args=config, train_dataset=ds, processing_class=tok).train()


def run_path(name: str, args, pairs: Path, work: Path) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    if name in ("smoldist", "smoldist-sweep"):
        sweep = name == "smoldist-sweep"
        recipe = smoldist_recipe(args, pairs, work, f"{name}-run", 2.0 if sweep else 1.0)
        cmd = [sys.executable, "-m", "smoldist", "train", str(recipe)]
    else:
        cmd = [sys.executable, __file__, "--worker", name, "--pairs-file", str(pairs), "--out-dir", str(work / name)]
        cmd += ["--model", str(args.model), "--seq-len", str(args.seq_len), "--trl-batch", str(args.trl_batch)]
        cmd += ["--beta", str(args.beta), "--lr", str(args.lr)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=args.timeout)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{name} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    out = {"path": name, "seconds": round(seconds, 2)}
    ref = re.search(r"reference log-probs computed for [\d,]+ pairs in ([\d.]+) s", p.stdout)
    if ref:
        out["reference_s"] = float(ref.group(1))
    elif "reference log-probs reused" in p.stdout:
        out["reference_s"] = "reused"
    return out


def store_stats(work: Path) -> dict:
    (manifest,) = (work / "store").glob("*/manifest.json")
    split = json.loads(manifest.read_text())["splits"]["train"]
    return {k: split[k] for k in ("pairs", "rows", "tokens", "fill", "pairs_per_row")}


def fill_table(args, seq_lens: list[int]) -> int:
    """`smoldist prepare` of the pairs at each seq_len (no training): fill, pairs per row, rows over the bound."""
    from smoldist.config import load_recipe
    from smoldist.store.build import prepare

    args.work.mkdir(parents=True, exist_ok=True)
    pairs = write_pairs(args.gsm8k, args.pairs, args.work / "pairs.jsonl")
    print(f"{args.pairs} gsm8k pairs, the model's template, whole pairs per row (BFD over pair lengths)")
    print("| seq_len | pairs | rows | lower bound | fill | pairs per row | prepare s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for seq_len in seq_lens:
        args.seq_len = seq_len
        recipe = load_recipe(smoldist_recipe(args, pairs, args.work / f"fill-{seq_len}"))
        m = prepare(recipe.model, recipe.data, force=True, verbose=False).manifest
        s = m["splits"]["train"]
        rows.append({"seq_len": seq_len, **{k: s[k] for k in ("pairs", "rows", "rows_lower_bound", "fill")}})
        print(
            f"| {seq_len} | {s['pairs']:,} | {s['rows']:,} | {s['rows_lower_bound']:,} | {s['fill']:.2%} | "
            f"{s['pairs_per_row']:.2f} | {m['seconds']['total']:.1f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name("dpo_fill.json").write_text(json.dumps(rows, indent=2))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help=f"a model directory (default {REAL_MODEL})")
    ap.add_argument("--gsm8k", type=Path, default=REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--trl-batch", type=int, default=2, help="pairs per TRL step")
    ap.add_argument("--rows", type=int, default=1, help="packed rows per smoldist step")
    ap.add_argument("--init", default=None, choices=list(SHAPES), help="a random-init shape instead of --model")
    ap.add_argument("--tokenizer", default=None, help="tokenizer of the --init model (default pkg:demo/tokenizer)")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_dpo"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "dpo_throughput.json")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--fill", default=None, help="comma-separated seq_lens: packing fill only, no training")
    ap.add_argument("--worker", choices=TRL_PATHS, help=argparse.SUPPRESS)
    ap.add_argument("--pairs-file", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.init and args.model:
        ap.error("--init trains a random-init model in place of --model: give one of them")
    if args.tokenizer and not args.init:
        ap.error("--tokenizer is the --init model's; a --model directory brings its own")
    unknown = set(args.paths.split(",")) - set(PATHS)
    if unknown:
        ap.error(f"--paths: {', '.join(sorted(unknown))} not among {', '.join(PATHS)}")
    args.model = args.model or (None if args.init else REAL_MODEL)
    if args.worker:
        args.pairs = args.pairs_file
        trl_worker(args)
        return 0
    paths = args.paths.split(",")
    if "smoldist" in paths and not args.fill:  # a fresh store: the first smoldist run pays for the reference pass
        for old in ("store", *(f"{name}-run" for name in PATHS[:2]), *TRL_PATHS):
            shutil.rmtree(args.work / old, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.init:
        model_dir = args.work / f"model-{args.init}"
        if not (model_dir / "config.json").is_file():
            random_init_model(args.init, args.tokenizer or "pkg:demo/tokenizer", model_dir)
        args.model = model_dir
    if args.fill:
        return fill_table(args, [int(x) for x in args.fill.split(",")])
    pairs = write_pairs(args.gsm8k, args.pairs, args.work / "pairs.jsonl")
    results = [run_path(name, args, pairs, args.work) for name in paths]
    stats = store_stats(args.work) if (args.work / "store").is_dir() else {}
    tokens = stats.get("tokens")
    base = {r["path"]: r["seconds"] for r in results}
    print(f"\n{args.pairs} gsm8k pairs, seq_len {args.seq_len}, one epoch, whole process; store: {stats}")
    if stats and stats["pairs"] < args.pairs:  # smoldist drops a pair whose completions alone pass seq_len; TRL cuts
        print(
            f"note: {args.pairs - stats['pairs']} pairs longer than {args.seq_len} tokens: the paths saw different data"
        )
    print("| path | seconds | tokens/s | TRL defaults / this | TRL precompute / this | reference pass s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        r["tokens_per_s"] = round(tokens / r["seconds"], 1) if tokens else None
        for trl in TRL_PATHS:
            r[f"{trl}_over_this"] = round(base[trl] / r["seconds"], 2) if trl in base else None
        print(
            f"| {r['path']} | {r['seconds']:.1f} | {r['tokens_per_s'] or '-'} | {r['trl_over_this'] or '-'}x | "
            f"{r['trl-precompute_over_this'] or '-'}x | {r.get('reference_s', '-')} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "store": stats, "results": results}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
