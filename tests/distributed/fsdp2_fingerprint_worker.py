"""One rank of tests/distributed/test_fsdp2.py: fingerprint a tiny Llama before and after torch's own FSDP2
`fully_shard`.

torchrun --nproc_per_node 2 tests/fsdp2_fingerprint_worker.py OUT_DIR
"""

import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import LlamaConfig, LlamaForCausalLM

from smoldist.distributed.fingerprint import final_fingerprint
from smoldist.model.lora import frozen_checksum
from tests.helpers import TINY_INIT

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)  # same weights on every rank, as after from_pretrained
config = LlamaConfig(vocab_size=256, **TINY_INIT)
model = LlamaForCausalLM(config)
unsharded = final_fingerprint(copy.deepcopy(model))
frozen_unsharded = frozen_checksum(copy.deepcopy(model))  # a LoRA run's frozen-weight checksum, hashed alike
mesh = init_device_mesh("cpu", (world,))
for layer in model.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
local = {n: p.to_local().numel() for n, p in model.named_parameters() if hasattr(p, "to_local")}
full = {n: p.numel() for n, p in model.named_parameters()}
sharded = final_fingerprint(model)
frozen_sharded = frozen_checksum(model)
Path(sys.argv[1], f"rank-{rank}.json").write_text(
    json.dumps(
        {
            "rank": rank,
            "world_size": world,
            "dtensor_params": len(local),
            "params": len(full),
            "local_numel": sum(local.values()),
            "full_numel": sum(full.values()),
            "unsharded": list(unsharded),
            "sharded": list(sharded),
            "frozen_unsharded": frozen_unsharded,
            "frozen_sharded": frozen_sharded,
        }
    )
)
print(f"rank {rank}: fingerprints written", flush=True)
dist.barrier()
dist.destroy_process_group()
# The mesh and the sharded model still hold gloo's process group: at interpreter finalization its threads can
# release tensors after the GIL is gone and abort ("terminate called without an active exception", seen once in CI).
sys.stdout.flush()
os._exit(0)
