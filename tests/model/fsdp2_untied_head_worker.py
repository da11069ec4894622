"""One rank of tests/model/test_fsdp2_untied_head.py: an untied LM head under FSDP2, grouped as accelerate 1.16 groups
it (each decoder layer, the input embedding, then the tail [final norm, lm_head] with reshard_after_forward=False,
then the root), trained through TRL's fused head (which reads `lm_head.weight` and never calls `lm_head`), two
micro-batches accumulated without sync, then one with sync; its gradients against the same model unsharded.

torchrun --nproc_per_node 2 tests/model/fsdp2_untied_head_worker.py OUT_DIR GROUPING   # OUT_DIR/rank-N.json
"""

import json
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import LlamaConfig, LlamaForCausalLM
from trl.trainer.utils import add_fused_lm_head

from tests.helpers import TINY_INIT

CONFIG = LlamaConfig(vocab_size=256, **dict(TINY_INIT, tie_word_embeddings=False))


def build() -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(CONFIG)
    add_fused_lm_head(model)  # as SFTTrainer.__init__ does
    return model


def loss_of(model, ids):
    out = model(input_ids=ids, labels=ids, use_cache=False, fused_lm_head=True)
    return (-out.log_probs).sum() / out.label_mask.sum()


def shard(model, mesh, grouping: str) -> None:
    """accelerate: 1.16's utils/fsdp_utils.py fsdp2_prepare_model, untied case (the tail [norm, lm_head] one unit);
    head-alone: lm_head a unit of its own, whose hooks never fire (no module calls it)."""
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model.get_input_embeddings(), mesh=mesh)
    if grouping == "accelerate":
        fully_shard([model.model.norm, model.get_output_embeddings()], mesh=mesh, reshard_after_forward=False)
    else:
        fully_shard(model.get_output_embeddings(), mesh=mesh)
    fully_shard(model, mesh=mesh)


dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
mesh = init_device_mesh("cpu", (world,))
g = torch.Generator().manual_seed(1)
batches = [torch.randint(0, 256, (world, 24), generator=g) for _ in range(3)]  # rank r takes row r
grouping = sys.argv[2]
out = {"rank": rank, "world": world, "grouping": grouping}
if grouping == "peft-added-tokens":  # a tied model, LoRA + two added rows trained: what accelerate 1.16 sees and does
    from peft import LoraConfig, get_peft_model

    from smoldist.model.fused_head import tied_trainable_tokens

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=256, **TINY_INIT))
    add_fused_lm_head(base)
    model = get_peft_model(base, LoraConfig(r=4, trainable_token_indices={"embed_tokens": [254, 255]}))
    inner = model.get_base_model()
    embed, head = inner.get_input_embeddings(), inner.get_output_embeddings()
    out.update(refused=tied_trainable_tokens(model), tied_seen=embed.weight is head.weight)
    try:
        for layer in inner.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(embed, mesh=mesh)  # accelerate's untied branch: the embedding a unit of its own
        fully_shard([inner.model.norm, head], mesh=mesh, reshard_after_forward=False)
        fully_shard(model, mesh=mesh)
        out.update(ok=True)
    except Exception as e:  # noqa: BLE001 - the mechanism under test
        out.update(ok=False, error=f"{type(e).__name__}: {e}"[:300])
    Path(sys.argv[1], f"rank-{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()
    sys.exit(0)
try:
    reference = build()
    for ids in batches:
        (loss_of(reference, ids[rank : rank + 1]) / world).backward()  # each rank's share, summed below
    for p in reference.parameters():
        dist.all_reduce(p.grad)
    model = build()
    shard(model, mesh, grouping)
    out["head_sharded"] = type(model.lm_head.weight).__name__
    from smoldist.model.fused_head import head_unit_alone

    out["refused"] = head_unit_alone(model)
    for i, ids in enumerate(batches):
        model.set_requires_gradient_sync(i == len(batches) - 1)  # accumulate, then reduce on the last
        loss_of(model, ids[rank : rank + 1]).backward()  # FSDP2 averages over ranks
    diffs = {}
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        diffs[name] = (grad - q.grad).abs().max().item()
    out.update(ok=True, max_grad_diff=max(diffs.values()), grad_diffs=diffs)
except Exception as e:  # noqa: BLE001 - the mechanism under test: record what FSDP2 raised
    out.update(ok=False, error=f"{type(e).__name__}: {e}"[:500], trace=traceback.format_exc()[-1500:])
Path(sys.argv[1], f"rank-{rank}.json").write_text(json.dumps(out))
dist.destroy_process_group()
