"""The shipped recipes at their real size on one GPU (recipes.sh): random-init weights of the real shapes, a
synthetic smoltalk-shaped corpus, 10 optimizer steps each, the figures read from smoldist's own perf/* logs.

    python bench/gpu/recipe_runs.py prepare                       # corpus + tokenizer, then `smoldist prepare`, timed
    python bench/gpu/recipe_runs.py run NAME RECIPE [--no-ac] [--rows 4,2 | --rows from:EARLIER_NAME] [--compile]

A run is `smoldist train RECIPE --accelerate-config single_gpu` (SMOKE=1: plain `smoldist train` on CPU, tiny
shape, seq_len 256) with the recipe as shipped but for: model (random init of its shape + the bench tokenizer),
data (the synthetic corpus), 10 steps of 2 accumulated micro-batches, no saving or evaluation. --no-ac turns
activation checkpointing off; --rows tries each micro-batch row count in turn until one fits; --compile sets
torch_compile. Writes checks.NAME of $RESULTS: tokens/s per GPU, MFU, peak memory and headroom, over steps 4-10.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from results import SKIPPED_NO_CUDA, environment, load, record, results_path, smoke  # noqa: E402  (bench/gpu/results.py)

WORK = Path(os.environ.get("WORK", "/tmp/smoldist-gpu-work"))
SHAPES = {
    "smollm2-1.7b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
    "smollm2-135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
    },
}
SMOLLM2 = {"vocab_size": 49152, "tie_word_embeddings": True, "rms_norm_eps": 1e-5, "max_position_embeddings": 8192}
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 16384,
    "tie_word_embeddings": True,
    "max_position_embeddings": 512,
}
CONVERSATIONS = 20000  # ~ smoltalk's shape: 1-4 turns, long assistant answers (SMOKE: 400)
TOKENIZER_SAMPLE = 2000  # conversations the BPE learns from: a fixed 5,000-word vocabulary needs no more
TIMED_FROM = 4  # steps 1-3 are warm-up (allocator, kernels)


def synthetic_corpus(path: Path, n: int, seed: int = 0) -> None:
    """smoltalk-shaped chats: 1-4 turns, questions of 10-120 words, answers of 40-600, from a fixed word list."""
    rng = random.Random(seed)
    words = [
        "".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(1, 4)))
        for _ in range(5000)
    ]
    with path.open("w") as f:
        for _ in range(n):
            msgs = []
            for _ in range(rng.randint(1, 4)):
                for role, lo, hi in (("user", 10, 120), ("assistant", 40, 600)):
                    msgs.append({"role": role, "content": " ".join(rng.choices(words, k=rng.randint(lo, hi))) + "."})
            f.write(json.dumps({"messages": msgs}) + "\n")


def recipe(name: str, rows: int | None, ac: bool | None, compile_: bool, run_name: str = "prepare") -> Path:
    raw = yaml.safe_load((REPO / "launch" / name / "smoltalk.yaml").read_text())
    seq_len = 256 if smoke() else raw["data"]["seq_len"]
    rows = rows or raw["train"]["per_device_train_batch_size"]
    raw["model"] = {
        "init": dict(TINY) if smoke() else dict(SHAPES[name], **SMOLLM2),
        "tokenizer": str(WORK / "tokenizer"),
        "chat_template": raw["model"]["chat_template"],
        "dtype": "float32" if smoke() else raw["model"]["dtype"],
        "attn_implementation": raw["model"].get("attn_implementation", "auto"),  # the recipe's, or the default
    }
    raw["data"].update(
        sources=[{"path": str(WORK / "corpus.jsonl"), "format": "messages"}],
        seq_len=seq_len,
        store=str(WORK / "store"),
        num_proc=os.cpu_count(),
    )
    raw["train"].update(
        output_dir=str(WORK / "runs" / run_name),
        max_steps=10,
        per_device_train_batch_size=rows,
        global_batch_tokens=rows * seq_len * 2,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
    )
    if ac is not None:
        raw["train"]["activation_checkpointing"] = ac
    if compile_:
        raw["train"]["torch_compile"] = True
    raw["tracking"] = {"wandb": {"mode": "disabled"}}
    path = WORK / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def smoldist(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="disabled")
    return subprocess.run([sys.executable, "-m", "smoldist", *args], cwd=REPO, env=env, capture_output=True, text=True)


def prepare() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    n = 400 if smoke() else CONVERSATIONS
    synthetic_corpus(WORK / "corpus.jsonl", n)
    sys.path.insert(0, str(HERE.parent))
    from prepare import train_tokenizer  # bench/prepare.py: a 16k byte-level BPE on the corpus

    lines = (WORK / "corpus.jsonl").read_text().splitlines()
    (WORK / "tokenizer-sample.jsonl").write_text("\n".join(lines[:TOKENIZER_SAMPLE]) + "\n")  # the words repeat
    train_tokenizer(WORK / "tokenizer-sample.jsonl", WORK / "tokenizer")
    corpus_s = time.perf_counter() - t
    t = time.perf_counter()
    p = smoldist("prepare", str(recipe("smollm2-1.7b", None, None, False)))
    prepare_s = time.perf_counter() - t
    print(p.stdout[-2000:], p.stderr[-3000:])
    manifest = next((json.loads(m.read_text()) for m in (WORK / "store").glob("*/manifest.json")), {})
    entry = {
        "ok": p.returncode == 0,
        "conversations": n,
        "cores": os.cpu_count(),
        "corpus_and_tokenizer_s": round(corpus_s, 1),
        "prepare_s": round(prepare_s, 1),
        "counts": manifest.get("counts"),
        "figures": ["prepare_s", "cores"],
    }
    record(results_path(), "prepare", entry, top=environment())
    return p.returncode


def figures(run_dir: Path) -> dict:
    """perf/* of the timed steps, token-weighted like a longer run's average."""
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    logs = [h for h in history if "perf/step_time_s" in h and h["step"] >= TIMED_FROM]
    secs = sum(h["perf/step_time_s"] for h in logs)
    out = {
        "timed_steps": len(logs),
        "step_time_s": secs / len(logs),
        "tokens_per_s_per_gpu": sum(h["perf/tokens_per_s_per_device"] * h["perf/step_time_s"] for h in logs) / secs,
        "trained_tokens_per_s_per_gpu": sum(
            h["perf/trained_tokens_per_s_per_device"] * h["perf/step_time_s"] for h in logs
        )
        / secs,
        "peak_memory_gib": max(h["perf/peak_memory_gib"] for h in logs),
    }
    if all("perf/mfu" in h for h in logs):
        out["mfu"] = sum(h["perf/mfu"] * h["perf/step_time_s"] for h in logs) / secs
    return out


def run(name: str, shipped: str, rows_try: list[int | None], ac: bool | None, compile_: bool) -> int:
    import torch

    if compile_ and smoke():
        record(results_path(), name, {"ok": None, "skipped": SKIPPED_NO_CUDA})
        return 0
    if len(rows_try) == 1 and str(rows_try[0]).startswith("from:"):  # the rows an earlier run found to fit
        earlier = load(Path(results_path())).get("checks", {}).get(rows_try[0].removeprefix("from:"), {})
        rows_try = [earlier.get("rows") if earlier.get("ok") else 2]
    attempts = []
    for rows in rows_try:
        path = recipe(shipped, rows, ac, compile_, name)
        cmd = ["train", str(path)] + ([] if smoke() else ["--accelerate-config", "single_gpu"])
        t = time.perf_counter()
        p = smoldist(*cmd)
        tail = (p.stdout + p.stderr).strip().splitlines()[-12:]
        oom = any("out of memory" in line.lower() for line in tail)
        attempts.append(
            {"rows": rows, "exit": p.returncode, "seconds": round(time.perf_counter() - t, 1), "out_of_memory": oom}
        )
        print(f"{name}: rows {rows}: exit {p.returncode}{' (out of memory)' if oom else ''}", flush=True)
        if p.returncode == 0:
            break
        print("\n".join(tail))
    shipped_cfg = yaml.safe_load(path.read_text())["train"]
    entry = {
        "recipe": f"launch/{shipped}/smoltalk.yaml",
        "attempts": attempts,
        "rows": attempts[-1]["rows"] or shipped_cfg["per_device_train_batch_size"],
        "activation_checkpointing": shipped_cfg.get("activation_checkpointing"),
        "compile": compile_,
        "ok": attempts[-1]["exit"] == 0,
        "figures": ["tokens_per_s_per_gpu", "mfu", "peak_memory_gib"],
    }
    if entry["ok"]:
        entry.update(figures(WORK / "runs" / name))
        if torch.cuda.is_available():
            entry["headroom_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30 - entry["peak_memory_gib"]
    record(results_path(), name, entry)
    return 0 if entry["ok"] else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["prepare"]:
        return prepare()
    if len(argv) < 3 or argv[0] != "run" or argv[2] not in SHAPES:
        sys.exit(
            f"usage: recipe_runs.py prepare | run NAME ({'|'.join(SHAPES)}) [--no-ac] [--rows 4,2|from:NAME] "
            "[--compile]"
        )
    rest = argv[3:]
    rows = rest[rest.index("--rows") + 1].split(",") if "--rows" in rest else [None]
    rows = [r if r is None or r.startswith("from:") else int(r) for r in rows]
    return run(argv[1], argv[2], rows, False if "--no-ac" in rest else None, "--compile" in rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
