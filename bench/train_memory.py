"""Peak memory of `smoldist train` against the size of the store it trains on (memory-mapped shards).

    python bench/train_memory.py                       # 2,000 and 20,000 conversations
    python bench/train_memory.py --conversations 500 --factor 10 --steps 10

Builds two corpora of gsm8k-style multi-turn conversations, one `--factor` times the other,
prepares a store for each, then runs the same training (tiny model, same steps) on each in its own
process and reads the process's peak RSS. If the store were read into memory, the larger one
would show it. Memory is sampled from /proc while training runs: anonymous (private) memory,
which is what a larger store must not grow, and file-backed pages (the memory-mapped shards the
steps touched: page cache that the kernel reclaims under pressure). Prints a table, writes JSON.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from prepare import SHARED_GSM8K, build_corpus, qa_pool  # noqa: E402  (bench/prepare.py)


def recipe(work: Path, corpus: Path, name: str) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(
        json.dumps(
            {  # JSON is YAML
                "model": {
                    "init": {
                        "hidden_size": 64,
                        "intermediate_size": 128,
                        "num_hidden_layers": 2,
                        "num_attention_heads": 4,
                        "num_key_value_heads": 2,
                        "max_position_embeddings": 2048,
                    },
                    "tokenizer": "pkg:demo/tokenizer",
                    "dtype": "float32",
                },
                "data": {"sources": [{"path": str(corpus)}], "seq_len": 1024, "store": str(work / "store")},
                "train": {
                    "output_dir": str(work / f"run-{name}"),
                    "per_device_train_batch_size": 4,
                    "save_strategy": "no",
                    "logging_steps": 5,
                    "activation_checkpointing": False,
                    "dataloader_num_workers": 0,
                },
                "tracking": {"wandb": {"mode": "disabled"}},
            }
        )
    )
    return path


def run_sampled(cmd: list[str], env: dict) -> tuple[int, str, float, float]:
    """Run `cmd`, sampling its RssAnon / RssFile every 50 ms; return (rc, stderr, peak anon GB, peak file GB)."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    anon = file = 0
    while p.poll() is None:
        try:
            st = dict(line.split(":", 1) for line in Path(f"/proc/{p.pid}/status").read_text().splitlines())
            anon = max(anon, int(st["RssAnon"].split()[0]))
            file = max(file, int(st["RssFile"].split()[0]))
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.05)
    return p.returncode, p.stderr.read(), anon / 2**20, file / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversations", type=int, default=2000)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_memory.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="smoldist-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    pool = qa_pool(SHARED_GSM8K, 8000, seed=0)
    env = dict(os.environ, WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    rows = []
    for name, n in (("small", args.conversations), ("large", args.conversations * args.factor)):
        corpus = work / f"{name}.jsonl"
        build_corpus(corpus, pool, n, seed=1)
        rec = recipe(work, corpus, name)
        subprocess.run(
            [sys.executable, "-m", "smoldist", "prepare", str(rec)], check=True, env=env, capture_output=True
        )
        rc, err, anon, file = run_sampled(
            [sys.executable, "-m", "smoldist", "train", str(rec), f"train.max_steps={args.steps}"], env
        )
        if rc:
            sys.exit(err[-3000:])
        manifests = [json.loads(m.read_text()) for m in (work / "store").glob("*/manifest.json")]
        manifest = next(
            m for m in manifests if m["inputs"]["sources"][0]["identity"]["files"][0]["path"] == str(corpus)
        )
        store_mb = sum(f.stat().st_size for f in (work / "store" / manifest["key"]).rglob("*.arrow")) / 2**20
        rows.append(
            {
                "store": name,
                "conversations": n,
                "tokens": manifest["counts"]["tokens"],
                "rows": manifest["splits"]["train"]["rows"],
                "store_mb": store_mb,
                "peak_anon_gb": anon,
                "peak_file_backed_gb": file,
            }
        )
    print(
        f"\n{'store':6s} {'conversations':>13s} {'tokens':>12s} {'rows':>7s} {'store MB':>9s} "
        f"{'peak anon GB':>13s} {'peak file GB':>13s}"
    )
    for r in rows:
        print(
            f"{r['store']:6s} {r['conversations']:>13,} {r['tokens']:>12,} {r['rows']:>7,} {r['store_mb']:>9.1f} "
            f"{r['peak_anon_gb']:>13.3f} {r['peak_file_backed_gb']:>13.3f}"
        )
    grow = rows[1]["peak_anon_gb"] - rows[0]["peak_anon_gb"]
    print(
        f"\nstore {rows[1]['store_mb'] / rows[0]['store_mb']:.1f}x larger; peak anonymous memory {grow * 1024:+.0f} MB"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
