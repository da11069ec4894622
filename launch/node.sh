#!/usr/bin/env bash
# One node's part of a multi-node job: start it once per node (e.g. `srun --ntasks-per-node=1`).
#   launch/node.sh RECIPE [section.key=value ...]
# Everything per node is evaluated HERE, on the node, never in the batch script: the node rank
# (SLURM_NODEID, else NODE_RANK), node count (SLURM_JOB_NUM_NODES, else NNODES) and GPUs
# (GPUS_PER_NODE, else the job's SLURM_GPUS_ON_NODE, else the GPUs this node sees). MASTER_ADDR and MASTER_PORT come from the caller.
# Nodes without GPUs use a CPU config by themselves; ACCELERATE_CONFIG names any config.
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
  config=${ACCELERATE_CONFIG:-cpu_ddp}; procs=${PROCS_PER_NODE:-1}
else
  config=${ACCELERATE_CONFIG:-multi_gpu}; procs=$gpus
fi
echo "[node.sh] $(hostname): node $node_rank of $nnodes, $procs process(es), config $config, master $MASTER_ADDR:$port"
exec "$PYTHON" -m smoldist train "$recipe" --accelerate-config "$config" --num-machines "$nnodes" \
  --gpus-per-node "$procs" --machine-rank "$node_rank" --main-process-ip "$MASTER_ADDR" --main-process-port "$port" "$@"
