"""Data preparation speed: `smoldist prepare` vs TRL's own preparation vs the tokenizer's floor.

    python bench/prepare.py                       # 20,000 conversations, real gsm8k text if ../shared has it
    python bench/prepare.py --conversations 2000 --out bench/results/prepare-small.json

Builds a corpus of multi-turn conversations (1-4 gsm8k question/answer turns each), trains a
16k-vocab byte-level BPE on it, then times three whole processes on the same cores:
  (a) smoldist prepare (template + tokenize + assistant mask + BFD pack + write the store),
  (b) TRL SFTTrainer preparing the same data (packing=True, bfd, assistant_only_loss=True,
      dataset_num_proc = cores), fresh datasets cache,
  (c) the floor: the tokenizer's raw encode_batch on the already-rendered text.
Prints a table (tokens/s, ratio to TRL, fill) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_GSM8K = next((p for p in (REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl",
                                  REPO.parents[1] / "shared" / "data" / "gsm8k" / "train.jsonl") if p.is_file()),
                    REPO.parent / "shared" / "data" / "gsm8k" / "train.jsonl")
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
    return NUMBER.sub(lambda m: str(rng.randrange(10 ** (len(m.group()) - 1) if len(m.group()) > 1 else 0, 10 ** len(m.group()))), text)


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


TRL_SCRIPT = textwrap.dedent('''
    import json, sys, time
    t0 = time.perf_counter()
    import datasets
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer
    from smoldist.templates import load_template
    corpus, tok_dir, seq_len, procs, out_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.chat_template = load_template("smollm2")  # with generation markers, so assistant_only_loss works
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    ds = datasets.load_dataset("json", data_files=corpus, split="train")
    args = SFTConfig(output_dir=out_dir, max_length=seq_len, packing=True, packing_strategy="bfd", assistant_only_loss=True,
                     dataset_num_proc=procs, use_cpu=True, bf16=False, report_to="none")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    data = trainer.train_dataset
    lengths = [len(x) for x in data["input_ids"]]
    print(json.dumps({"tokens": sum(lengths), "rows": len(lengths), "fill": sum(lengths) / (len(lengths) * seq_len),
                      "in_process_s": time.perf_counter() - t0}))
''')

FLOOR_SCRIPT = textwrap.dedent('''
    import json, sys, time
    from tokenizers import Tokenizer
    from transformers.utils.chat_template_utils import render_jinja_template
    from smoldist.templates import load_template
    corpus, tok_dir = sys.argv[1], sys.argv[2]
    convs = [json.loads(l)["messages"] for l in open(corpus)]
    texts, _ = render_jinja_template(conversations=convs, chat_template=load_template("smollm2"))
    tok = Tokenizer.from_file(tok_dir + "/tokenizer.json")
    t = time.perf_counter(); n = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)); with_off = time.perf_counter() - t
    t = time.perf_counter(); tok.encode_batch_fast(texts, add_special_tokens=False); fast = time.perf_counter() - t
    print(json.dumps({"tokens": n, "encode_batch_s": with_off, "encode_batch_fast_s": fast}))
''')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversations", type=int, default=20000)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--procs", type=int, default=os.cpu_count())
    ap.add_argument("--gsm8k", type=Path, default=SHARED_GSM8K, help="gsm8k train.jsonl (synthetic problems if missing)")
    ap.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "prepare.json")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="smoldist-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus, tok_dir = work / "corpus.jsonl", work / "tokenizer"
    pool = qa_pool(args.gsm8k, 8000, seed=0)
    build_corpus(corpus, pool, args.conversations, seed=0)
    train_tokenizer(corpus, tok_dir)
    print(f"corpus: {args.conversations:,} conversations from {'gsm8k' if args.gsm8k.is_file() else 'synthetic problems'}; "
          f"{args.procs} processes; seq_len {args.seq_len}; work dir {work}")

    env = dict(os.environ, TOKENIZERS_PARALLELISM="true", HF_DATASETS_CACHE=str(work / "hf-cache"), WANDB_MODE="disabled")
    recipe = work / "recipe.yaml"
    recipe.write_text(json.dumps({  # JSON is YAML
        "model": {"init": {"hidden_size": 16}, "tokenizer": str(tok_dir), "chat_template": "smollm2"},
        "data": {"sources": [{"path": str(corpus), "format": "messages"}], "seq_len": args.seq_len, "packing": "bfd",
                 "overflow": "truncate", "loss_on": "assistant", "num_proc": args.procs, "store": str(work / "store")},
    }))
    smol = [sys.executable, "-m", "smoldist", "prepare", str(recipe), "--force"]
    t_smol, _ = timed(smol, env)
    manifest = json.loads(next((work / "store").glob("*/manifest.json")).read_text())
    smol_tokens, smol_fill = manifest["splits"]["train"]["tokens"], manifest["splits"]["train"]["fill"]
    t_reuse, _ = timed(smol[:-1], env)  # unchanged recipe: decide and reuse

    script = work / "trl_prepare.py"
    script.write_text(TRL_SCRIPT)
    t_trl, out = timed([sys.executable, str(script), str(corpus), str(tok_dir), str(args.seq_len), str(args.procs), str(work / "trl-out")], env)
    trl = json.loads(out.strip().splitlines()[-1])

    floor_script = work / "floor.py"
    floor_script.write_text(FLOOR_SCRIPT)
    _, out = timed([sys.executable, str(floor_script), str(corpus), str(tok_dir)], env)
    floor = json.loads(out.strip().splitlines()[-1])

    rows = [
        ("smoldist prepare (whole process)", smol_tokens, t_smol, smol_fill),
        ("TRL SFTTrainer prep (whole process)", trl["tokens"], t_trl, trl["fill"]),
        ("TRL SFTTrainer prep (in-process)", trl["tokens"], trl["in_process_s"], trl["fill"]),
        ("floor: encode_batch (offsets)", floor["tokens"], floor["encode_batch_s"], None),
        ("floor: encode_batch_fast", floor["tokens"], floor["encode_batch_fast_s"], None),
    ]
    print(f"\n{'path':38s} {'tokens':>11s} {'seconds':>8s} {'tokens/s':>11s} {'vs TRL':>7s} {'fill':>8s}")
    trl_rate = trl["tokens"] / t_trl
    result = {"conversations": args.conversations, "seq_len": args.seq_len, "procs": args.procs,
              "corpus": "gsm8k" if args.gsm8k.is_file() else "synthetic", "reuse_s": t_reuse, "rows": []}
    for name, tokens, secs, fill in rows:
        rate = tokens / secs
        print(f"{name:38s} {tokens:>11,} {secs:>8.2f} {rate:>11,.0f} {rate / trl_rate:>6.2f}x {'' if fill is None else f'{fill:.2%}':>8s}")
        result["rows"].append({"path": name, "tokens": tokens, "seconds": secs, "tokens_per_s": rate, "vs_trl": rate / trl_rate, "fill": fill})
    print(f"\nre-running smoldist prepare on the unchanged recipe (whole process, reuse): {t_reuse:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
