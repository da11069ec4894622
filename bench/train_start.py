"""Train start against store size: seconds from process start to the first optimiser step.

    python bench/train_start.py                       # stores 1x, 10x, 100x the demo's (460 conversations)
    python bench/train_start.py --factors 1,10 --repeats 1

For each size, builds a corpus of gsm8k-style multi-turn conversations (the demo's size times the
factor), prepares its store (`factor` shards, so per-shard costs show too; not timed), then runs
`smoldist train RECIPE train.max_steps=1` as a whole process and times the first `smoldist | step 1`
line. Run 1 of each size deletes the sha256 cache first (every shard and source is read, as every
start did before the cache); the next runs find it (a stat per file). The tiny model, tokenizer and
seq_len are the demo's. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from prepare import SHARED_GSM8K, build_corpus, median, qa_pool  # noqa: E402  (bench/prepare.py)

DEMO_CONVERSATIONS = 460


def recipe(work: Path, corpus: Path, name: str, shards: int) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(
        json.dumps(
            {  # JSON is YAML; the demo's model shape, tokenizer and seq_len
                "model": {
                    "init": {
                        "hidden_size": 128,
                        "intermediate_size": 384,
                        "num_hidden_layers": 4,
                        "num_attention_heads": 4,
                        "num_key_value_heads": 2,
                        "max_position_embeddings": 1024,
                        "tie_word_embeddings": True,
                    },
                    "tokenizer": "pkg:demo/tokenizer",
                    "dtype": "float32",
                },
                "data": {
                    "sources": [{"path": str(corpus)}],
                    "seq_len": 512,
                    "store": str(work / "store"),
                    "num_shards": shards,
                },
                "train": {
                    "output_dir": str(work / f"run-{name}"),
                    "per_device_train_batch_size": 4,
                    "save_strategy": "no",
                    "logging_steps": 1,
                    "activation_checkpointing": False,
                    "dataloader_num_workers": 0,
                },
                "tracking": {"wandb": {"mode": "disabled"}},
            }
        )
    )
    return path


def time_to_first_step(cmd: list[str], env: dict, timeout: float = 600) -> float:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first, tail = None, []
    try:
        for line in p.stdout:
            tail = (tail + [line])[-40:]
            if first is None and "smoldist | step 1 |" in line:  # tqdm may precede it on the line
                first = time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                break
    finally:
        p.kill() if p.poll() is None else None
        p.wait()
    if first is None:
        sys.exit("no first step seen:\n" + "".join(tail))
    return first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factors", default="1,10,100")
    ap.add_argument("--repeats", type=int, default=2, help="runs with the cache present, after the one without")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_start.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="smoldist-start-"))
    work.mkdir(parents=True, exist_ok=True)
    pool = qa_pool(SHARED_GSM8K, 8000, seed=0)
    env = dict(os.environ, WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    sizes = []
    for factor in map(int, args.factors.split(",")):
        name = f"x{factor}"
        corpus = work / f"{name}.jsonl"
        build_corpus(corpus, pool, DEMO_CONVERSATIONS * factor, seed=1)
        rec = recipe(work, corpus, name, shards=factor)
        subprocess.run(
            [sys.executable, "-m", "smoldist", "prepare", str(rec)], check=True, env=env, capture_output=True
        )
        manifest = next(
            m
            for m in (json.loads(p.read_text()) for p in (work / "store").glob("*/manifest.json"))
            if m["inputs"]["sources"][0]["identity"]["files"][0]["path"] == str(corpus)
        )
        store_mb = sum(f.stat().st_size for f in (work / "store" / manifest["key"]).rglob("*.arrow")) / 2**20
        sizes.append(
            {
                "factor": factor,
                "rec": rec,
                "conversations": DEMO_CONVERSATIONS * factor,
                "store_mb": store_mb,
                "tokens": manifest["counts"]["tokens"],
                "shards": manifest["splits"]["train"]["shards"],
                "source_mb": corpus.stat().st_size / 2**20,
            }
        )
    cmd = lambda rec: [sys.executable, "-m", "smoldist", "train", str(rec), "train.max_steps=1"]  # noqa: E731
    for s in sizes:  # without the cache: what every start cost before it
        shutil.rmtree(work / "store" / ".cache", ignore_errors=True)
        s["no_cache_s"] = time_to_first_step(cmd(s["rec"]), env)
        print(f"  x{s['factor']}: no cache {s['no_cache_s']:.2f} s", flush=True)
    for i in range(args.repeats):  # interleaved sizes, so that machine load hits them alike
        for s in sizes:
            s.setdefault("cached_s", []).append(time_to_first_step(cmd(s["rec"]), env))
            print(f"  x{s['factor']}: cached run {i + 1} {s['cached_s'][-1]:.2f} s", flush=True)
    print(
        f"\n{'store':6s} {'conversations':>13s} {'tokens':>11s} {'shards':>6s} {'store MB':>8s} {'source MB':>9s} "
        f"{'no cache s':>10s} {'cached s (median)':>17s}"
    )
    for s in sizes:
        s["cached_median_s"] = median(s["cached_s"])
        print(
            f"x{s['factor']:<5d} {s['conversations']:>13,} {s['tokens']:>11,} {s['shards']:>6d} {s['store_mb']:>8.1f} "
            f"{s['source_mb']:>9.1f} {s['no_cache_s']:>10.2f} {s['cached_median_s']:>17.2f}"
        )
        s["rec"] = str(s["rec"])
    spread = max(s["cached_median_s"] for s in sizes) - min(s["cached_median_s"] for s in sizes)
    print(f"\ncached start, largest minus smallest median: {spread:+.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"sizes": sizes, "spread_s": spread}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
