"""One DeepSpeed ZeRO-2 bf16 engine on CPU (world 1), 16 micro-batches: how far its accumulated gradient is from
the exact sum, with the config smoldist gives DeepSpeed and with DeepSpeed's defaults.

python tests/model/ds_accum_worker.py PORT  -> prints one JSON line
"""

import copy
import json
import os
import sys
from types import SimpleNamespace

os.environ.update(
    RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], DS_ACCELERATOR="cpu"
)
import deepspeed
import torch
from deepspeed.utils import safe_get_full_grad

from smoldist.model.precision import reduce_in_fp32

STEPS = 16
torch.manual_seed(0)
base = torch.nn.Linear(256, 256)
inputs = [torch.randn(8, 256) for _ in range(STEPS)]


def loss_of(model, x):
    return model(x.to(next(model.parameters()).dtype)).float().pow(2).mean()


exact = torch.zeros(256, 256, dtype=torch.float64)  # each micro-batch's bf16 gradient, summed exactly
for x in inputs:
    m = copy.deepcopy(base).to(torch.bfloat16)
    (loss_of(m, x) / STEPS).backward()  # as engine.backward scales it
    exact += m.weight.grad.double()

out = {}
for name in ("deepspeed_default", "smoldist"):
    config = {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": STEPS,
        "bf16": {"enabled": True},
        "zero_optimization": {"stage": 2},
        "zero_allow_untested_optimizer": True,
    }
    if name == "smoldist":  # the same function the trainer applies to accelerate's DeepSpeed plugin
        reduce_in_fp32(SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config, zero_stage=2)))
    model = copy.deepcopy(base)
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0), config=config)
    for i, x in enumerate(inputs):
        engine.backward(loss_of(engine, x))
        if i < STEPS - 1:
            engine.step()  # not a boundary: only counts the micro-batch (the last one's gradient is read before)
    grad = safe_get_full_grad(engine.module.weight).double()
    out[name] = {
        "rel_error": ((grad - exact).norm() / exact.norm()).item(),
        "grad_accum_dtype": str(engine.get_data_types()[1]),
        "communication_data_type": str(engine.communication_data_type),
        "config": config,
    }
    engine.destroy()
print(json.dumps(out), flush=True)
