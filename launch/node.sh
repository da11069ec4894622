#!/usr/bin/env bash
# One node's part of a multi-node job: start it once per node (e.g. `srun --ntasks-per-node=1`).
#   launch/node.sh RECIPE [section.key=value ...]
# Everything per node is evaluated HERE, on the node, never in the batch script: the node rank
# (SLURM_NODEID, else NODE_RANK), node count (SLURM_JOB_NUM_NODES, else NNODES) and GPUs
# (GPUS_PER_NODE, else the job's SLURM_GPUS_ON_NODE, else the GPUs this node sees). MASTER_ADDR and MASTER_PORT come from the caller.
# ACCELERATE_CONFIG names any config (default multi_gpu). A node without GPUs stops with an error
# unless ACCELERATE_CONFIG is a CPU one (cpu_ddp, cpu_zero2, cpu_zero3): no silent CPU fallback.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$([ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}
recipe=${1:?usage: launch/node.sh RECIPE [overrides]}; shift
nnodes=${SLURM_JOB_NUM_NODES:-${NNODES:-1}}
node_rank=${SLURM_NODEID:-${NODE_RANK:-0}}
: "${MASTER_ADDR:?set MASTER_ADDR to the address of the first node}"
port=${MASTER_PORT:-29500}
gpus=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}}
gpus=${gpus:-0}
if [ "$gpus" -eq 0 ]; then
  case ${ACCELERATE_CONFIG:-} in
    cpu_*|*/cpu_*) config=$ACCELERATE_CONFIG; procs=${PROCS_PER_NODE:-1} ;;
    *) echo "[node.sh] error: $(hostname) has no GPUs (nvidia-smi lists none; GPUS_PER_NODE/SLURM_GPUS_ON_NODE unset or 0)" \
            "but config ${ACCELERATE_CONFIG:-multi_gpu} needs them. Ask for GPUs: smoldist submit RECIPE --gpus-per-node G" \
            "(or sbatch --gpus-per-node=G slurm/train.sbatch ...); to train on CPUs on purpose set ACCELERATE_CONFIG=cpu_ddp." >&2
       exit 2 ;;
  esac
else
  config=${ACCELERATE_CONFIG:-multi_gpu}; procs=$gpus
fi
echo "[node.sh] $(hostname): node $node_rank of $nnodes, $procs process(es), config $config, master $MASTER_ADDR:$port"
exec "$PYTHON" -m smoldist train "$recipe" --accelerate-config "$config" --num-machines "$nnodes" \
  --gpus-per-node "$procs" --machine-rank "$node_rank" --main-process-ip "$MASTER_ADDR" --main-process-port "$port" "$@"
