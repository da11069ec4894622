"""Data preparation speed: `smoldist prepare` vs TRL's own preparation vs the tokenizer's floor.

    python bench/prepare.py                       # both corpora, 20,000 conversations each,
                                                  # real gsm8k text if ../shared has it
    python bench/prepare.py --conversations 2000 --runs 1 --warmup 0 --out bench/results/prepare-small.json

Two corpora of multi-turn conversations (1-4 gsm8k question/answer turns each): `repeated` draws the
turns from the gsm8k pool (a message recurs ~7 times), `distinct` redraws every number so that no
message text occurs twice. For each, trains a 16k-vocab byte-level BPE on it, then times whole
processes on the same cores, in pairs (smoldist, then TRL) after a warm-up pair, medians reported:
  (a) smoldist prepare (template + tokenize + assistant mask + BFD pack + write the store),
  (b) TRL SFTTrainer preparing the same data (packing=True, bfd, assistant_only_loss=True,
      dataset_num_proc = cores), fresh datasets cache,
  (c) the floor: the tokenizer's raw encode_batch on the already-rendered text, on rayon threads and in
      `procs` single-threaded processes (smoldist's layout).
Prints a table (time, tokens/s, ratio to TRL, fill, rows vs the bound ceil(tokens/seq_len), pack time) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_GSM8K = next(
    (
        p
        for p in (
            REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl",
            REPO.parents[1] / "shared" / "data" / "gsm8k" / "train.jsonl",
        )
        if p.is_file()
    ),
    REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl",
)
NUMBER = re.compile(r"\d+")


def qa_pool(gsm8k: Path | None, n: int, seed: int) -> list[tuple[str, str]]:
    if gsm8k and gsm8k.is_file():
        return [(r["question"], r["answer"]) for r in map(json.loads, gsm8k.read_text().splitlines())]
    from smoldist.demo.build_assets import word_problem  # offline stand-in with the same shape

    rng = random.Random(seed)
    return [tuple(m["content"] for m in word_problem(rng)["messages"]) for _ in range(n)]


def build_corpus(path: Path, pool: list[tuple[str, str]], n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            msgs = []
            for q, a in rng.sample(pool, rng.randint(1, 4)):
                msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            f.write(json.dumps({"messages": msgs}) + "\n")


def fresh_numbers(text: str, rng: random.Random) -> str:
    """The same text with every number redrawn (same digit count): real wording, new message."""
    return NUMBER.sub(
        lambda m: str(rng.randrange(10 ** (len(m.group()) - 1) if len(m.group()) > 1 else 0, 10 ** len(m.group()))),
        text,
    )


def build_distinct_corpus(path: Path, pool: list[tuple[str, str]], n: int, seed: int) -> None:
    """Like build_corpus, but no message text occurs twice in the corpus (numbers redrawn until unique)."""
    rng, seen = random.Random(seed), set()

    def unique(text: str) -> str:
        while True:
            new = fresh_numbers(text, rng)
            if new not in seen:
                seen.add(new)
                return new
            text = new + " "  # a text without numbers: vary its ending

    with path.open("w") as f:
        for _ in range(n):
            msgs = []
            for q, a in rng.sample(pool, rng.randint(1, 4)):
                msgs += [{"role": "user", "content": unique(q)}, {"role": "assistant", "content": unique(a)}]
            f.write(json.dumps({"messages": msgs}) + "\n")


def train_tokenizer(corpus: Path, out: Path) -> None:
    from smoldist.demo.build_assets import train_tokenizer as train

    texts = [m["content"] for line in corpus.read_text().splitlines() for m in json.loads(line)["messages"]]
    train(texts, out, vocab_size=16384)


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    took = time.perf_counter() - t
    if p.returncode:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return took, p.stdout


TRL_SCRIPT = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import datasets
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer
    from smoldist.data.templates import load_template
    corpus, tok_dir, seq_len, procs, out_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.chat_template = load_template("smollm2")  # with generation markers, so assistant_only_loss works
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    ds = datasets.load_dataset("json", data_files=corpus, split="train")
    args = SFTConfig(output_dir=out_dir, max_length=seq_len, packing=True, packing_strategy="bfd",
                     assistant_only_loss=True, dataset_num_proc=procs, use_cpu=True, bf16=False, report_to="none")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    data = trainer.train_dataset
    lengths = [len(x) for x in data["input_ids"]]
    print(json.dumps({"tokens": sum(lengths), "rows": len(lengths), "fill": sum(lengths) / (len(lengths) * seq_len),
                      "in_process_s": time.perf_counter() - t0}))
""")

FLOOR_SCRIPT = textwrap.dedent("""
    import json, multiprocessing as mp, os, sys, time
    from tokenizers import Tokenizer
    from transformers.utils.chat_template_utils import render_jinja_template
    from smoldist.data.templates import load_template
    corpus, tok_dir, procs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    convs = [json.loads(l)["messages"] for l in open(corpus)]
    texts, _ = render_jinja_template(conversations=convs, chat_template=load_template("smollm2"))
    tok = Tokenizer.from_file(tok_dir + "/tokenizer.json")
    t = time.perf_counter()
    n = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    with_off = time.perf_counter() - t
    t = time.perf_counter(); tok.encode_batch_fast(texts, add_special_tokens=False); fast = time.perf_counter() - t
    def encode(chunk):  # smoldist's layout: one single-threaded tokenizer per process, batches of 1,000
        return len(tok.encode_batch(chunk, add_special_tokens=False))
    def single_thread():
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    with mp.get_context("fork").Pool(procs, initializer=single_thread) as pool:
        t = time.perf_counter()
        sum(pool.imap(encode, [texts[i:i + 1000] for i in range(0, len(texts), 1000)]))
        in_procs = time.perf_counter() - t
    print(json.dumps({"tokens": n, "encode_batch_s": with_off, "encode_batch_fast_s": fast,
                      "encode_batch_procs_s": in_procs}))
""")


CORPORA = {"repeated": build_corpus, "distinct": build_distinct_corpus}


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def bench_corpus(kind: str, args, pool, env: dict) -> dict:
    """Paired runs (smoldist then TRL, same cores, back to back) after warm-ups; medians."""
    work = args.work / kind
    work.mkdir(parents=True, exist_ok=True)
    corpus, tok_dir = work / "corpus.jsonl", work / "tokenizer"
    CORPORA[kind](corpus, pool, args.conversations, seed=0)
    train_tokenizer(corpus, tok_dir)
    env = dict(env, HF_DATASETS_CACHE=str(work / "hf-cache"))
    recipe = work / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {  # JSON is YAML
                "model": {"init": {"hidden_size": 16}, "tokenizer": str(tok_dir), "chat_template": "smollm2"},
                "data": {
                    "sources": [{"path": str(corpus), "format": "messages"}],
                    "seq_len": args.seq_len,
                    "packing": "bfd",
                    "overflow": "truncate",
                    "loss_on": "assistant",
                    "num_proc": args.procs,
                    "store": str(work / "store"),
                },
            }
        )
    )
    smol = [sys.executable, "-m", "smoldist", "prepare", str(recipe), "--force"]
    script = work / "trl_prepare.py"
    script.write_text(TRL_SCRIPT)
    trl_cmd = [
        sys.executable,
        str(script),
        str(corpus),
        str(tok_dir),
        str(args.seq_len),
        str(args.procs),
        str(work / "trl-out"),
    ]
    t_smol, t_trl, trl_in = [], [], []
    for i in range(args.warmup + args.runs):
        a, _ = timed(smol, env)
        for d in (work / "hf-cache", work / "trl-out"):  # a fresh datasets cache: TRL must not reuse its last run's map
            shutil.rmtree(d, ignore_errors=True)
        b, out = timed(trl_cmd, env)
        trl = json.loads(out.strip().splitlines()[-1])
        print(f"  {kind} pair {i + 1}{' (warm-up)' if i < args.warmup else ''}: smoldist {a:.2f} s, TRL {b:.2f} s")
        if i >= args.warmup:
            t_smol.append(a), t_trl.append(b), trl_in.append(trl["in_process_s"])
    manifest = json.loads(next((work / "store").glob("*/manifest.json")).read_text())
    split = manifest["splits"]["train"]
    t_reuse, _ = timed(smol[:-1], env)  # unchanged recipe: hash check by stat, verify, reuse
    floor = {}
    if args.floor:
        floor_script = work / "floor.py"
        floor_script.write_text(FLOOR_SCRIPT)
        _, out = timed([sys.executable, str(floor_script), str(corpus), str(tok_dir), str(args.procs)], env)
        floor = json.loads(out.strip().splitlines()[-1])
    sm, tm = median(t_smol), median(t_trl)
    return {
        "corpus": kind,
        "conversations": args.conversations,
        "procs": args.procs,
        "distinct_messages": len(
            {m["content"] for line in corpus.read_text().splitlines() for m in json.loads(line)["messages"]}
        ),
        "smoldist": {
            "seconds": t_smol,
            "median_s": sm,
            "tokens": split["tokens"],
            "tokens_per_s": split["tokens"] / sm,
            "fill": split["fill"],
            "rows": split["rows"],
            "rows_lower_bound": split["rows_lower_bound"],
            "pack_s": split["pack_seconds"],
            "in_process": manifest["seconds"],
            "reuse_s": t_reuse,
        },
        "trl": {
            "seconds": t_trl,
            "median_s": tm,
            "in_process_median_s": median(trl_in),
            "tokens": trl["tokens"],
            "tokens_per_s": trl["tokens"] / tm,
            "fill": trl["fill"],
            "rows": trl["rows"],
            "rows_lower_bound": -(-trl["tokens"] // args.seq_len),
        },
        "ratio": tm / sm,
        "pair_ratios": [b / a for a, b in zip(t_smol, t_trl)],
        "ratio_median_of_pairs": median([b / a for a, b in zip(t_smol, t_trl)]),
        "floor": floor,
    }


def print_table(results: list[dict]) -> None:
    head = (
        f"{'corpus':9s} {'path':9s} {'median s':>8s} {'tokens':>10s} {'tokens/s':>10s} {'vs TRL':>7s} "
        f"{'fill':>7s} {'rows':>6s} {'bound':>6s} {'over':>6s} {'pack s':>6s}"
    )
    print("\n" + head)
    for r in results:
        for name in ("smoldist", "trl"):
            x = r[name]
            over = x["rows"] / x["rows_lower_bound"] - 1
            ratio = r["ratio"] if name == "smoldist" else 1.0
            pack = f"{x['pack_s']:.3f}" if "pack_s" in x else ""
            print(
                f"{r['corpus']:9s} {name:9s} {x['median_s']:>8.2f} {x['tokens']:>10,} {x['tokens_per_s']:>10,.0f} "
                f"{ratio:>6.2f}x {x['fill']:>7.2%} {x['rows']:>6,} {x['rows_lower_bound']:>6,} {over:>6.2%} {pack:>6s}"
            )
    for r in results:
        s, f = r["smoldist"], r["floor"]
        extra = (
            f"; floor (in-process, rendered text): encode_batch {f['encode_batch_s']:.2f} s, encode_batch_fast "
            f"{f['encode_batch_fast_s']:.2f} s (rayon threads), encode_batch in {r['procs']} single-threaded processes "
            f"{f['encode_batch_procs_s']:.2f} s"
            if f
            else ""
        )
        print(
            f"{r['corpus']}: TRL/smoldist per pair {', '.join(f'{x:.2f}x' for x in r['pair_ratios'])}, "
            f"median {r['ratio_median_of_pairs']:.2f}x"
        )
        print(
            f"{r['corpus']}: smoldist runs {', '.join(f'{t:.2f}' for t in s['seconds'])} s; TRL runs "
            f"{', '.join(f'{t:.2f}' for t in r['trl']['seconds'])} s; smoldist in-process {s['in_process']}; "
            f"unchanged re-run {s['reuse_s']:.2f} s{extra}"
        )


def bench_derived_masks(pool: list[tuple[str, str]], n: int) -> None:
    """Encoder throughput in-process, one batch of n multi-turn conversations: the bundled template's direct renderer,
    a marked template through jinja, and masks derived from the same template without markers (three renders a turn)."""
    from smoldist.config import ModelConfig
    from smoldist.data.converters import Document
    from smoldist.data.encode import Encoder
    from smoldist.data.templates import load_template
    from smoldist.data.tokenizer import load_prep_tokenizer

    rng = random.Random(0)
    docs = []
    for _ in range(n):
        msgs = []
        for q, a in rng.sample(pool, rng.randint(1, 3)):
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        docs.append(Document(messages=msgs))
    tok = load_prep_tokenizer(ModelConfig(tokenizer="pkg:demo/tokenizer", init={"x": 1}))
    marked = load_template("smollm2")
    unmarked = marked.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    for name, template in (
        ("smollm2 direct", marked),
        ("chatml jinja markers", load_template("chatml")),
        ("derived (no markers)", unmarked),
    ):
        enc = Encoder.for_template(tok, template, "assistant")
        t0 = time.perf_counter()
        batch = enc.encode(docs)
        dt = time.perf_counter() - t0
        print(
            f"{name:22s} {n:,} conversations {int(batch.lengths.sum()):,} tokens in {dt:.2f} s: "
            f"{batch.lengths.sum() / dt / 1e3:,.0f} k tokens/s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversations", type=int, default=20000)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--procs", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3, help="paired runs per corpus (medians reported)")
    ap.add_argument("--warmup", type=int, default=1, help="paired warm-up runs per corpus, not counted")
    ap.add_argument("--corpora", default="repeated,distinct", help="comma-separated: " + ", ".join(CORPORA))
    ap.add_argument("--no-floor", dest="floor", action="store_false", help="skip the raw tokenizer floor")
    ap.add_argument(
        "--gsm8k", type=Path, default=SHARED_GSM8K, help="gsm8k train.jsonl (synthetic problems if missing)"
    )
    ap.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "prepare.json")
    ap.add_argument(
        "--mode",
        choices=["prepare", "derived-masks"],
        default="prepare",
        help="derived-masks: what deriving masks from a template without markers costs (in-process)",
    )
    args = ap.parse_args()
    if args.mode == "derived-masks":
        return bench_derived_masks(qa_pool(args.gsm8k, 8000, seed=0), args.conversations)

    args.work = args.work or Path(tempfile.mkdtemp(prefix="smoldist-bench-"))
    pool = qa_pool(args.gsm8k, 8000, seed=0)
    print(
        f"{args.conversations:,} conversations per corpus "
        f"from {'gsm8k' if args.gsm8k.is_file() else 'synthetic problems'}; "
        f"{args.procs} processes; seq_len {args.seq_len}; {args.warmup} warm-up + {args.runs} paired runs; "
        f"work dir {args.work}"
    )
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true", WANDB_MODE="disabled")
    results = [bench_corpus(kind, args, pool, env) for kind in args.corpora.split(",")]
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "seq_len": args.seq_len,
                "procs": args.procs,
                "runs": args.runs,
                "warmup": args.warmup,
                "corpus_source": "gsm8k" if args.gsm8k.is_file() else "synthetic",
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
