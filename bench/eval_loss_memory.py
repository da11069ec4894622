"""Peak memory of one `smoldist eval --loss` batch at seq_len 4096: the full-logits path it had vs the chunked one.

    python bench/eval_loss_memory.py                      # a table: path x rows per batch, peak MiB above baseline
    python bench/eval_loss_memory.py --one after 4        # one measurement (run in a process of its own)

A 2-layer Llama (hidden 64) with SmolLM2's vocabulary (49,152), so the LM head dominates as it does at seq_len 4096
in the real model; each row packs 4 documents of 1,024 tokens, every token trained. `before`: the model's own
loss over full fp32 logits with sdpa (what `smoldist eval --loss` ran); `after`: `chunked_loss_sum` with the varlen
attention (no dense mask). Each measurement runs in a fresh process and reports ru_maxrss during the batch minus
ru_maxrss before it (torch allocations are invisible to tracemalloc).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path

SEQ, DOCS, VOCAB = 4096, 4, 49152
CASES = [("before", 1), ("before", 2), ("after", 1), ("after", 2), ("after", 4), ("after", 8)]


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(path: str, rows: int) -> float:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from smoldist.eval.loss import chunked_loss_sum, use_attention

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=SEQ,
            tie_word_embeddings=True,
        )
    ).eval()
    use_attention(model, "sdpa" if path == "before" else "varlen")
    ids = torch.randint(0, VOCAB, (1, rows * SEQ))
    pos = torch.arange(SEQ // DOCS).repeat(rows * DOCS).unsqueeze(0)
    labels = ids.clone()
    labels[pos == 0] = -100  # as the padding-free collator marks each document's first token
    batch = {"input_ids": ids, "labels": labels, "position_ids": pos}
    base = maxrss_mib()  # a high-water mark: only the first pass can raise it
    with torch.no_grad():
        if path == "before":
            model(**batch, use_cache=False).loss.item()
        else:
            chunked_loss_sum(model, batch)
    return maxrss_mib() - base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=2, metavar=("PATH", "ROWS"))
    ns = ap.parse_args()
    if ns.one:
        print(f"{measure(ns.one[0], int(ns.one[1])):.0f}")
        return
    print(f"seq_len {SEQ}, vocab {VOCAB}: peak MiB above the process's baseline during one eval batch")
    for path, rows in CASES:
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--one", path, str(rows)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        figure = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"failed: {out.stderr[-200:]}"
        print(f"{path:6s} {rows} row(s) x {SEQ} tokens: {figure} MiB", flush=True)


if __name__ == "__main__":
    main()
