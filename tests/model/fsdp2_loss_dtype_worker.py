"""One rank of tests/model/test_reduction_dtype.py: the dtype of the loss TRL's SFTTrainer computes under FSDP2 with a
bf16 launch, with the policy smoldist leaves and with the one accelerate 1.15 built.

torchrun --nproc_per_node 2 tests/model/fsdp2_loss_dtype_worker.py OUT_DIR    # writes OUT_DIR/rank-N.json
"""

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from accelerate.utils import FullyShardedDataParallelPlugin
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from transformers import LlamaConfig, LlamaForCausalLM
from trl.trainer.utils import add_fused_lm_head

from smoldist.model.precision import reduce_in_fp32
from tests.helpers import TINY_INIT

CONFIG = LlamaConfig(vocab_size=256, **TINY_INIT)


def build() -> LlamaForCausalLM:
    """The same fp32 weights on every rank and every call, with the fused head SFTTrainer adds."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(CONFIG)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer.__init__ does
    return model


def trl_loss(model, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-token log-probs) as trl 1.16 SFTTrainer.compute_loss computes them (loss_type nll)."""
    outputs = model(input_ids=ids, labels=labels, use_cache=False, fused_lm_head=True)
    return (-outputs.log_probs).sum() / outputs.label_mask.sum().clamp(min=1), outputs.log_probs


def sharded_loss(policy: MixedPrecisionPolicy, mesh, ids, labels) -> dict:
    model = build()
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    params = list(model.parameters())  # read before the forward: the root stays unsharded after it
    sharded = all(hasattr(p, "to_local") and p.to_local().numel() < p.numel() for p in params)
    with torch.no_grad():
        loss, log_probs = trl_loss(model, ids, labels)
    return {
        "loss": loss.float().item(),
        "loss_dtype": str(loss.dtype),
        "log_probs_dtype": str(log_probs.dtype),
        "policy": [str(policy.param_dtype), str(policy.reduce_dtype), str(policy.output_dtype)],
        "sharded": sharded,
    }


dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
mesh = init_device_mesh("cpu", (world,))
gen = torch.Generator().manual_seed(1)
ids = torch.randint(0, CONFIG.vocab_size, (2, 24), generator=gen)
labels = ids.clone()
labels[:, :8] = -100  # a prompt that carries no loss

plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
plugin.set_mixed_precision("bf16")  # what AcceleratorState does for mixed_precision: bf16
reduce_in_fp32(SimpleNamespace(fsdp_plugin=plugin, deepspeed_plugin=None))
ours = sharded_loss(plugin.mixed_precision_policy, mesh, ids, labels)
old = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16, output_dtype=torch.bfloat16)
with torch.no_grad():
    unsharded = trl_loss(build(), ids, labels)[0].item()
result = {
    "rank": rank,
    "world_size": world,
    "sharded": ours.pop("sharded"),
    "smoldist": ours,
    "accelerate-1.15": sharded_loss(old, mesh, ids, labels),
    "unsharded_loss": unsharded,
}
Path(sys.argv[1], f"rank-{rank}.json").write_text(json.dumps(result))  # a file each: stdout lines interleave
dist.barrier()
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)  # gloo's threads can abort at interpreter finalization (tests/distributed/fsdp2_fingerprint_worker.py)
