#!/usr/bin/env bash
# GPU proof 2 of 3 (issue 26): smoldist against TRL, and MFU, in one device call (<= 9 min).
#   device:  run(command="bash bench/gpu/speed.sh", carry=[".whl"], timeout_s=600)
#   here:    bash bench/gpu/speed.sh --cpu-smoke       (CPU dry run: tiny model, seq_len 128; compile skipped)
# Each run is its own process (bench/train_throughput.py: random-init SmolLM2 shapes, same corpus, template, masks,
# optimizer, bf16 autocast over fp32 masters), 3 warm-up + 10 timed steps, merged into $OUT/train_throughput.json
# (mode full, device) as it ends; log $OUT/speed.log. ATTN=sdpa if proof.sh found varlen failing.
source "$(dirname "$0")/common.sh" speed train_throughput.json "$@"
ATTN=${ATTN:-varlen}
RUN=("$PY" bench/gpu/speed_run.py)  # one run: bench/train_throughput.py, merged into $RESULTS
# step NAME LIMIT_S CMD: the limits sum to <= 540 s with the wheel install (tests/train/test_gpu_scripts.py)
step data 40 "${RUN[@]}" data                                                    # corpus + BPE tokenizer, once
step 135M-trl-nopack 60 "${RUN[@]}" 135M-trl-nopack --shapes 135M --seq-lens 2048 --paths trl-nopack --attn "$ATTN"
step 135M-trl-bfd 55 "${RUN[@]}" 135M-trl-bfd --shapes 135M --seq-lens 2048 --paths trl-bfd --attn "$ATTN"
step 135M-smoldist 50 "${RUN[@]}" 135M-smoldist --shapes 135M --seq-lens 2048 --paths smoldist --attn "$ATTN"
step 1.7B-trl-bfd 75 "${RUN[@]}" 1.7B-trl-bfd --shapes 1.7B --seq-lens 4096 --paths trl-bfd --attn "$ATTN"
step 1.7B-smoldist 70 "${RUN[@]}" 1.7B-smoldist --shapes 1.7B --seq-lens 4096 --paths smoldist --attn "$ATTN"
# DPO (bench/dpo_throughput.py): smoldist (prepare, reference pass, packed pairs) and a sweep's second run (store and
# reference reused), then TRL DPOTrainer with precomputed reference log-probs and with its defaults; same pairs
step dpo-smoldist 60 "${RUN[@]}" dpo-smoldist --dpo --paths smoldist,smoldist-sweep
step dpo-trl-precompute 45 "${RUN[@]}" dpo-trl-precompute --dpo --paths trl-precompute
step dpo-trl 45 "${RUN[@]}" dpo-trl --dpo --paths trl
finish
