"""The non-finite stop under DeepSpeed bf16 (smoldist/train/nonfinite.py), on CPU: DeepSpeed's overflow check skips the
step (the message must say so, not that it was applied), and ZeRO-3's empty partitions cannot hide non-finite weights
(they are read through DeepSpeed's own full fp32 parameter access). Marked slow: real 2-process DeepSpeed runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from smoldist.errors import NonFiniteError
from smoldist.faults import NAN_LOSS_AT_STEP
from tests.helpers import REPO, free_port, one_row_recipe

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("config", ["cpu_zero2", "cpu_zero3"])
def test_a_nan_loss_under_deepspeed_bf16_says_the_step_was_skipped(tmp_path, conversations_file, config):
    recipe = one_row_recipe(tmp_path, conversations_file, max_steps=4, save_steps=100)
    out = tmp_path / "run"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "smoldist",
            "train",
            str(recipe),
            f"train.output_dir={out}",
            "model.dtype=bfloat16",
            "--accelerate-config",
            config,
            "--num-processes",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env=dict(os.environ, TOKENIZERS_PARALLELISM="false", **{NAN_LOSS_AT_STEP: "2"}),
    )
    err = p.stdout[-3000:] + p.stderr[-3000:]
    # the rank's own code, its one line and no launcher traceback (smoldist train filters the launcher's output)
    assert p.returncode == NonFiniteError.exit_code and "ChildFailedError" not in p.stderr, err
    line = p.stderr.split("smoldist: error: step 2:", 1)[1].split("\n", 1)[0]
    assert "the loss is non-finite on rank 1 (gradient norm inf)" in line, err
    assert "DeepSpeed skipped this step (its overflow check saw the non-finite gradients)" in line, err
    assert "applied" not in line and "weights are non-finite" not in line, err  # the skipped step left them finite
    assert sorted(f.name for f in (out / "nonfinite-step-2").iterdir()) == ["rank-0.pt", "rank-1.pt"]


ZERO3_WEIGHTS = """
import json, os, sys
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
                  DS_ACCELERATOR="cpu")
import deepspeed, torch
from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param
from smoldist.train.nonfinite import weights_nonfinite
cfg = {"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True}, "zero_optimization": {"stage": 3}}
model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=cfg)
before = weights_nonfinite(engine)
p = next(engine.module.parameters())
full = safe_get_full_fp32_param(p)
full[0, 0] = float("nan")
safe_set_full_fp32_param(p, full)
naive = any(not bool(torch.isfinite(q).all()) for q in engine.parameters())
print("RESULT" + json.dumps({"before": before, "after": weights_nonfinite(engine), "naive": naive,
                             "partition_numel": p.numel()}))
"""


def test_zero3_weights_are_read_through_deepspeeds_full_parameter_access():
    p = subprocess.run(
        [sys.executable, "-c", ZERO3_WEIGHTS, str(free_port())], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    out = json.loads(p.stdout.split("RESULT", 1)[1])
    # the module's own parameters are empty partitions: a plain isfinite over them sees nothing
    assert out == {"before": False, "after": True, "naive": False, "partition_numel": 0}
