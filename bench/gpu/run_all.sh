#!/usr/bin/env bash
# What a GPU session runs through the device tool (one stage or two per call; each call <= 10 min, 30 min in all).
#   here, once:   /work/main/.venv/bin/python bench/gpu/fetch_wheels.py        # .whl/: trl, datasets, deepspeed, wandb, ...
#   device call:  run(command="bash bench/gpu/run_all.sh tests", carry=[".whl"])
# Stages (in order of priority; README.md in this folder says what each proves and costs):
#   tests    gpu-marked tests: varlen kernel vs SDPA, packed loss == documents (varlen, flex, sdpa), varlen == sdpa training
#   engines  single_gpu, multi_gpu (1 process), fsdp2, zero2, zero3: 3 steps of the 135M shape, save, reload, same logits
#   attn     throughput, 135M x 2048/4096, three paths x attention varlen / flex_attention / sdpa
#   grid     throughput, 135M/360M/1.7B x 2048/4096, three paths, attention $ATTN (default varlen)
#   grid2048, grid4096   the grid split in two (one device call each)
#   compile  throughput with torch.compile, 360M and 1.7B x 4096, trl-bfd and smoldist, attention $ATTN
# Results: bench/results/train_throughput-<stage>.json and logs, copied to $OUT (what comes back from the device).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/smoldist-gpu-out}; mkdir -p "$OUT" bench/results
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
if [ -d .whl ] && ! python3 -c "import trl, deepspeed" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
ATTN=${ATTN:-varlen}
bench() {  # bench NAME ARGS...: one throughput run, its JSON and log into bench/results and $OUT
  local name=$1; shift
  timeout 560 python3 bench/train_throughput.py --warmup 3 --steps 10 --work /tmp/bench-work \
    --out "bench/results/train_throughput-$name.json" "$@" 2>&1 | tee "$OUT/bench-$name.log"
  local rc=${PIPESTATUS[0]}
  cp "bench/results/train_throughput-$name.json" "$OUT/" 2>/dev/null || true
  return "$rc"
}
python3 - <<'PY' | tee "$OUT/env.txt"
import importlib.metadata as m, torch
print(torch.cuda.get_device_name() if torch.cuda.is_available() else "NO GPU", "torch", torch.__version__,
      *(f"{p} {m.version(p)}" for p in ("transformers", "trl", "accelerate", "datasets", "deepspeed")))
PY
for stage in "$@"; do
  echo "=== $stage $(date -u +%FT%TZ)" | tee -a "$OUT/stages.txt"
  case $stage in
    tests)    timeout 560 python3 -m pytest -q -m gpu tests/model/test_gpu.py -k "not engine" -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" ;;
    engines)  timeout 580 python3 -m pytest -q -m gpu tests/model/test_gpu.py -k engine -p no:cacheprovider 2>&1 | tee "$OUT/engines.log" ;;
    attn)     bench attn --shapes 135M --seq-lens 2048,4096 --attn varlen,flex_attention,sdpa ;;
    grid)     bench grid --attn "$ATTN" ;;
    grid2048) bench grid2048 --seq-lens 2048 --attn "$ATTN" ;;
    grid4096) bench grid4096 --seq-lens 4096 --attn "$ATTN" ;;
    compile)  bench compile --shapes 360M,1.7B --seq-lens 4096 --paths trl-bfd,smoldist --attn "$ATTN" --compile --warmup 8 ;;
    *) echo "unknown stage '$stage' (tests, engines, attn, grid, grid2048, grid4096, compile)"; exit 2 ;;
  esac
  echo "=== $stage exit ${PIPESTATUS[0]}" | tee -a "$OUT/stages.txt"
done
