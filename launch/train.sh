#!/usr/bin/env bash
# Workstation launcher: one recipe on all GPUs of this machine.
#   launch/train.sh RECIPE [--accelerate-config NAME|PATH] [--gpus N] [section.key=value ...] [--dry-run]
# --gpus N: processes to start (default: GPUs found). 0 GPUs: one CPU process, unless a CPU config
# (cpu_ddp, cpu_zero2, cpu_zero3) is named, which starts N processes (default 2).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$([ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}
[ $# -ge 1 ] || { sed -n '2,5p' "$0"; exit 2; }
recipe=$1; shift
config=""; gpus=""; rest=()
while [ $# -gt 0 ]; do
  case $1 in
    --accelerate-config) config=$2; shift 2 ;;
    --gpus) gpus=$2; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done
found=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${found:-0}" -eq 0 ] && [ -z "$config" ] && [ -z "$gpus" ]; then
  exec "$PYTHON" -m smoldist train "$recipe" "${rest[@]}"        # no GPU, no config: one CPU process
fi
case $config in cpu_*) gpus=${gpus:-2} ;; esac
gpus=${gpus:-$found}
if [ -z "$config" ]; then
  if [ "$gpus" -le 1 ]; then config=single_gpu; else config=multi_gpu; fi
fi
exec "$PYTHON" -m smoldist train "$recipe" --accelerate-config "$config" --num-processes "$gpus" "${rest[@]}"
