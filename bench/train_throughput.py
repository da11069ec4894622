"""Training throughput: smoldist vs plain TRL SFTTrainer (no packing) vs TRL with BFD packing.

    python bench/train_throughput.py --cpu-smoke                      # all three paths on CPU, tiny model, < 1 min
    python bench/train_throughput.py                                  # GPU: 135M/360M/1.7B x seq_len 2048/4096
    python bench/train_throughput.py --shapes 1.7B --seq-lens 4096 --attn varlen --steps 30
    python bench/train_throughput.py --attn varlen,flex_attention,sdpa      # each path under each attention

Random-init SmolLM2-shaped Llama models (tied embeddings, vocab 49152) train for `--warmup` optimizer steps,
then `--steps` timed steps, on a multi-turn corpus (1-4 gsm8k question/answer turns per conversation, built by
bench/prepare.py's helpers; synthetic problems of the same shape when ../shared has no gsm8k) with a BPE
tokenizer trained on it. Every (shape, seq_len, path) runs in its own process (bench/throughput_paths.py), so
memory and compile caches do not leak between runs. The three paths see the same conversations, template,
loss mask (assistant turns), model init, optimizer and precision:
  trl-nopack  SFTTrainer on the messages, padded batches, assistant_only_loss=True;
  trl-bfd     SFTTrainer with packing=True, packing_strategy="bfd" (padding-free);
  smoldist    smoldist.train.run on the store `smoldist prepare` builds (BFD, overflow truncated like TRL's bfd).
Packed paths take `--rows` rows of seq_len tokens per micro-batch; trl-nopack takes as many conversations as
fit in those rows on average (rows x documents per packed row), so every path sees about the same real tokens
per optimizer step, unless `--nopack-batch` says otherwise.
Reported, over the timed steps only: real (non-padding) tokens/s, trained (loss-carrying) tokens/s, MFU with
smoldist.train.throughput's FLOP model (6 N T + 12 L d sum s_i^2 over the real documents), step time, peak memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PATHS = ("trl-nopack", "trl-bfd", "smoldist")
ATTN = ("auto", "sdpa", "varlen", "flex_attention", "eager", "flash_attention_2")
SMOLLM2 = {"vocab_size": 49152, "tie_word_embeddings": True, "rms_norm_eps": 1e-5}


def llama(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, **extra) -> dict:
    return dict(
        extra,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
    )


SHAPES = {
    "135M": llama(576, 1536, 30, 9, 3, **SMOLLM2),
    "360M": llama(960, 2560, 32, 15, 5, **SMOLLM2),
    "1.7B": llama(2048, 8192, 24, 32, 32, **SMOLLM2),
    "tiny": llama(32, 64, 2, 4, 2, tie_word_embeddings=True),  # the smoke model: vocab sized to the demo tokenizer
}
DEMO_CORPUS = REPO / "smoldist" / "demo" / "conversations.jsonl"


def bench_module(name: str):
    """bench/<name>.py, imported under a name that cannot clash (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"smoldist_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_prepare_module():
    """bench/prepare.py: corpus and tokenizer helpers."""
    return bench_module("prepare")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="135M,360M,1.7B", help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--seq-lens", default=None, help="comma-separated sequence lengths (default 2048,4096; smoke 128)")
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps first (allocator, kernels, compile)")
    ap.add_argument("--rows", type=int, default=None, help="packed rows per micro-batch (default: 16384 tokens' worth)")
    ap.add_argument(
        "--nopack-batch",
        type=int,
        default=None,
        help="trl-nopack conversations per micro-batch (default: token-matched)",
    )
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of " + ", ".join(PATHS))
    ap.add_argument(
        "--attn",
        default="auto",
        help=f"comma-separated, of {', '.join(ATTN)}: every path runs under each (auto: smoldist's default; the TRL "
        "paths then run transformers' default, sdpa, as plain TRL does)",
    )
    ap.add_argument("--compile", action="store_true", help="torch_compile=True in all three paths")
    ap.add_argument(
        "--liger", action="store_true", help="use_liger_kernel=True in all three paths (needs liger-kernel)"
    )
    ap.add_argument(
        "--activation-checkpointing", action="store_true", help="in all three paths (default off: H200 has the memory)"
    )
    ap.add_argument(
        "--dtype",
        default="bfloat16",
        choices=["bfloat16", "float32"],
        help="model.dtype: bfloat16 = fp32 master weights + bf16 autocast in all three paths (docs/precision.md)",
    )
    ap.add_argument(
        "--peak-tflops", type=float, default=None, help="peak TFLOP/s per device for MFU (default: smoldist's table)"
    )
    ap.add_argument("--conversations", type=int, default=8000, help="corpus size (GPU mode)")
    ap.add_argument("--gsm8k", type=Path, default=REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl")
    ap.add_argument(
        "--corpus", type=Path, default=None, help="your own messages JSONL (e.g. a smoltalk slice) instead of gsm8k"
    )
    ap.add_argument("--tokenizer", default=None, help="tokenizer directory (default: a 16k BPE trained on the corpus)")
    ap.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (default bench/results/train_throughput.json; -cpu-smoke.json with --cpu-smoke)",
    )
    ap.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny model (hidden 32, 2 layers), seq_len 128, 1 warm-up + 3 timed steps, bundled demo data, CPU",
    )
    args = ap.parse_args(argv)
    if args.cpu_smoke:
        args.shapes, args.seq_lens, args.steps, args.warmup = "tiny", args.seq_lens or "128", 3, 1
        args.rows, args.dtype = args.rows or 32, "float32"
    args.out = args.out or HERE / "results" / f"train_throughput{'-cpu-smoke' if args.cpu_smoke else ''}.json"
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    args.seq_lens = [int(s) for s in (args.seq_lens or "2048,4096").split(",") if s.strip()]
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    for s in args.shapes:
        if s not in SHAPES:
            ap.error(f"--shapes: unknown '{s}'; choose from {', '.join(SHAPES)}")
    for p in args.paths:
        if p not in PATHS:
            ap.error(f"--paths: unknown '{p}'; choose from {', '.join(PATHS)}")
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be at least 1 (the clock starts at the end of the last warm-up step)")
    args.attn = [a.strip() for a in args.attn.split(",") if a.strip()]
    for a in args.attn:
        if a not in ATTN:
            ap.error(f"--attn: unknown '{a}'; choose from {', '.join(ATTN)}")
    if args.cpu_smoke and "flex_attention" in args.attn:
        ap.error("--attn flex_attention: FlexAttention has no backward on CPU; use sdpa or varlen with --cpu-smoke")
    if args.liger and importlib.util.find_spec("liger_kernel") is None:
        ap.error("--liger: the liger-kernel package is not importable here (pip install liger-kernel)")
    if "flash_attention_2" in args.attn and importlib.util.find_spec("flash_attn") is None:
        ap.error("--attn flash_attention_2: the flash-attn package is not importable here")
    return args


def build_data(args, work: Path) -> dict:
    """Corpus and tokenizer: the bundled demo ones in smoke mode, else a gsm8k multi-turn corpus + a BPE on it."""
    if args.cpu_smoke:
        return {
            "corpus": str(DEMO_CORPUS),
            "tokenizer": "pkg:demo/tokenizer",
            "kind": "smoldist demo conversations",
            "conversations": sum(1 for _ in DEMO_CORPUS.open()),
        }
    bp = bench_prepare_module()
    corpus, tok_dir = work / "corpus.jsonl", work / "tokenizer"
    if args.corpus:
        corpus, kind = args.corpus.resolve(), f"messages from {args.corpus}"
    else:
        kind = "gsm8k multi-turn (1-4 turns)" if args.gsm8k.is_file() else "synthetic gsm8k-like multi-turn (1-4 turns)"
        if not corpus.is_file():
            bp.build_corpus(corpus, bp.qa_pool(args.gsm8k, 8000, seed=0), args.conversations, seed=0)
    if args.tokenizer:
        tok_dir = Path(args.tokenizer).resolve()
    elif not (tok_dir / "tokenizer.json").is_file():
        bp.train_tokenizer(corpus, tok_dir)
    conversations = sum(1 for _ in corpus.open())
    return {"corpus": str(corpus), "tokenizer": str(tok_dir), "kind": kind, "conversations": conversations}


def base_recipe(args, data: dict, shape: str, seq_len: int, work: Path, procs: int, attn: str = "sdpa") -> dict:
    init = dict(SHAPES[shape], max_position_embeddings=max(seq_len, 1024))
    return {
        "model": {
            "init": init,
            "tokenizer": data["tokenizer"],
            "chat_template": "smollm2",
            "dtype": args.dtype,
            "attn_implementation": attn,
        },
        "data": {
            "sources": [{"path": data["corpus"], "format": "messages"}],
            "seq_len": seq_len,
            "packing": "bfd",
            "overflow": "truncate",
            "loss_on": "assistant",
            "eval_fraction": 0.0,
            "store": str(work / "store"),
            "num_proc": procs,
        },
    }


def trl_attention(path: str, attn: str) -> str:
    """The attention a path runs: `auto` is smoldist's; plain TRL gets transformers' default (sdpa) for it."""
    return "sdpa" if attn == "auto" and path != "smoldist" else attn


def build_store(raw: dict) -> dict:
    """The smoldist store for (tokenizer, corpus, seq_len), built here once; the smoldist runs reuse it."""
    import datasets

    from smoldist.config.load import build_recipe
    from smoldist.store.build import prepare

    datasets.disable_progress_bars()  # prepare(verbose=False) still lets save_to_disk draw one
    recipe = build_recipe({k: raw[k] for k in ("model", "data")}, name="bench")  # no train section: no TRL import
    res = prepare(recipe.model, recipe.data, verbose=False)
    return res.manifest["splits"]["train"]


def run_one(spec: dict, work: Path, env: dict) -> dict:
    name = f"{spec['shape']}-{spec['seq_len']}-{spec['attn']}-{spec['path']}"
    spec_path, out_path, log_path = work / f"{name}.spec.json", work / f"{name}.result.json", work / f"{name}.log"
    spec_path.write_text(json.dumps(spec, indent=2))
    out_path.unlink(missing_ok=True)
    t = time.perf_counter()
    with log_path.open("w") as log:
        p = subprocess.run(
            [sys.executable, str(HERE / "throughput_paths.py"), str(spec_path), str(out_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )
    wall = time.perf_counter() - t
    if p.returncode or not out_path.is_file():
        tail = log_path.read_text().strip().splitlines()[-15:]
        oom = any("OutOfMemory" in line or "out of memory" in line for line in tail)
        print(f"  {name}: FAILED (exit {p.returncode}{', out of memory' if oom else ''}); log {log_path}", flush=True)
        print("    " + "\n    ".join(tail), flush=True)
        error = "out of memory" if oom else f"exit {p.returncode}"
        return {"path": spec["path"], "error": error, "log_tail": tail, "wall_s": wall}
    result = json.loads(out_path.read_text())
    result["wall_s"] = wall
    print(
        f"  {name}: {result['tokens_per_s']:,.0f} tok/s, step {result['step_time_s']:.3f} s ({wall:.0f} s process)",
        flush=True,
    )
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    table = bench_module("throughput_table")
    work = args.work or Path(tempfile.mkdtemp(prefix="smoldist-train-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    procs = 1 if args.cpu_smoke else min(16, os.cpu_count() or 1)
    env = dict(
        os.environ,
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
        HF_DATASETS_CACHE=str(work / "hf-cache"),
        PYTHONUNBUFFERED="1",
    )
    if args.cpu_smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU even on a GPU machine
    t0 = time.perf_counter()
    data = build_data(args, work)
    print(
        f"corpus: {data['conversations']:,} conversations ({data['kind']}); tokenizer {data['tokenizer']}; "
        f"work dir {work}"
    )
    print(
        f"{args.warmup} warm-up + {args.steps} timed optimizer steps per run; attention {args.attn}; "
        f"compile {args.compile}; liger {args.liger}; activation checkpointing {args.activation_checkpointing}; "
        f"dtype {args.dtype}"
    )
    configs = []
    for seq_len in args.seq_lens:
        rows = args.rows or max(1, 16384 // seq_len)
        split = build_store(base_recipe(args, data, args.shapes[0], seq_len, work, procs))
        docs_per_row = split["documents"] / split["rows"]
        nopack = args.nopack_batch or max(1, round(rows * docs_per_row))
        print(
            f"seq_len {seq_len}: store {split['rows']:,} rows, {split['tokens']:,} tokens "
            f"({split['trained_tokens']:,} trained), "
            f"fill {split['fill']:.1%}, {docs_per_row:.2f} conversations per row; {rows} rows per micro-batch, "
            f"trl-nopack batch {nopack}"
        )
        for shape, attn in itertools.product(args.shapes, args.attn):
            paths = {}
            for path in args.paths:
                spec = {
                    "path": path,
                    "shape": shape,
                    "seq_len": seq_len,
                    "attn": attn,
                    "recipe": base_recipe(args, data, shape, seq_len, work, procs, trl_attention(path, attn)),
                    "corpus": data["corpus"],
                    "rows": rows,
                    "nopack_batch": nopack,
                    "warmup": args.warmup,
                    "steps": args.steps,
                    "compile": args.compile,
                    "liger": args.liger,
                    "activation_checkpointing": args.activation_checkpointing,
                    "peak_tflops": args.peak_tflops,
                    "cpu": args.cpu_smoke,
                    "procs": None if procs == 1 else procs,
                    "output_dir": str(work / "runs" / f"{shape}-{seq_len}-{attn}-{path}"),
                    "store_split": split,
                }
                paths[path] = run_one(spec, work, env)
            configs.append(
                {
                    "shape": shape,
                    "seq_len": seq_len,
                    "attn": attn,
                    "init": SHAPES[shape],
                    "paths": paths,
                    "ratios": table.ratios(paths),
                }
            )
    table.print_table(configs)
    best = table.best_attention(configs)
    table.print_best(best)
    first = next((r for c in configs for r in c["paths"].values() if "error" not in r), {})
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {
        "mode": "cpu-smoke" if args.cpu_smoke else "full",
        "device": first.get("device"),
        "peak_tflops": first.get("peak_tflops"),
        "versions": first.get("versions"),
        "corpus": data,
        "settings": settings,
        "configs": configs,
        "best": best,
        "wall_s": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out} ({time.perf_counter() - t0:.0f} s in all)")
    return 1 if any("error" in r for c in configs for r in c["paths"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
