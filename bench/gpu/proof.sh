#!/usr/bin/env bash
# GPU proof 1 of 3 (issue 25): every engine and attention path correct on the GPU, in one device call (<= 9 min).
#   device:  run(command="bash bench/gpu/proof.sh", carry=[".whl"], timeout_s=600)
#   here:    bash bench/gpu/proof.sh --cpu-smoke       (CPU dry run: tiny shapes, CUDA-only checks skipped)
# Writes $OUT/gpu_proof.json (rewritten after every step) and $OUT/proof.log; bench/gpu/README.md has the plan.
source "$(dirname "$0")/common.sh" proof gpu_proof.json "$@"
# step NAME LIMIT_S CMD: the limits sum to <= 540 s with the wheel install, and each is >= 1.5x the step's time in the
# CPU dry run recorded in bench/results/gpu_proof-cpu-smoke.json (tests/train/test_gpu_scripts.py checks both)
step env 20 "$PY" bench/gpu/proof_checks.py env
step kernels 55 "$PY" bench/gpu/proof_checks.py kernels                 # varlen == SDPA, packed == one by one (3 attns)
step train-alike 40 "$PY" bench/gpu/proof_checks.py train-alike         # varlen and sdpa train the 135M shape alike
step engine-single_gpu 40 "$PY" bench/gpu/engines.py single_gpu         # also: fp32 masters under bf16 autocast
step engine-fsdp2 45 "$PY" bench/gpu/engines.py fsdp2                   # + the FSDP2 mp_policy the model got
step engine-zero2 65 "$PY" bench/gpu/engines.py zero2                   # + the DeepSpeed config the engine got
step engine-zero3 65 "$PY" bench/gpu/engines.py zero3
step engine-fsdp2-lora 35 "$PY" bench/gpu/engines.py fsdp2-lora
step engine-zero3-lora 65 "$PY" bench/gpu/engines.py zero3-lora
step flops 35 "$PY" bench/gpu/proof_checks.py flops                     # FlopCounterMode vs FlopModel, 135M@4096
step eval-memory 30 "$PY" bench/gpu/proof_checks.py eval-memory         # peak memory of smoldist eval --loss at 4096
finish
