#!/usr/bin/env bash
# GPU proof 3 of 3 (issue 27): the shipped recipes at their real size on one GPU, in one device call (<= 9 min).
#   device:  run(command="bash bench/gpu/recipes.sh", carry=[".whl"], timeout_s=600)
#   here:    bash bench/gpu/recipes.sh --cpu-smoke     (CPU dry run: tiny shape, seq_len 256; compile skipped)
# Random-init weights of the real shapes, a synthetic smoltalk-shaped corpus prepared here by `smoldist prepare` (timed
# at the machine's core count), 10 steps a run; writes $OUT/gpu_recipes.json after every run, log $OUT/recipes.log.
source "$(dirname "$0")/common.sh" recipes gpu_recipes.json "$@"
R=("$PY" bench/gpu/recipe_runs.py)
# step NAME LIMIT_S CMD: the limits sum to <= 540 s with the wheel install (tests/train/test_gpu_scripts.py)
step prepare 80 "${R[@]}" prepare                                            # 20k conversations, all cores
step 1.7B-shipped 100 "${R[@]}" run 1.7B-shipped smollm2-1.7b                # as shipped: 8192, checkpointing on
step 135M-shipped 60 "${R[@]}" run 135M-shipped smollm2-135m                 # as shipped
step 1.7B-no-ac 130 "${R[@]}" run 1.7B-no-ac smollm2-1.7b --no-ac --rows 4,2           # largest rows that fit
step 1.7B-compile 130 "${R[@]}" run 1.7B-compile smollm2-1.7b --no-ac --rows from:1.7B-no-ac --compile  # if time is left
finish
