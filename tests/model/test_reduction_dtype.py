"""Gradients summed over micro-batches and reduced across ranks in fp32 under FSDP2 and DeepSpeed, as DDP does:
the policy and config smoldist hands the engines, and a DeepSpeed bf16 run on CPU where it changes the numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from smoldist.model.precision import reduce_in_fp32
from tests.helpers import REPO, assert_one_job, free_port, one_row_recipe, ranks, torchrun


def test_fsdp2_policy_from_a_bf16_launch_reduces_in_fp32():
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    plugin.set_mixed_precision("bf16")  # what AcceleratorState does for mixed_precision: bf16
    assert plugin.mixed_precision_policy.reduce_dtype == torch.bfloat16  # accelerate's own choice
    reduce_in_fp32(SimpleNamespace(fsdp_plugin=plugin, deepspeed_plugin=None))
    policy = plugin.mixed_precision_policy  # what accelerate's fsdp2_prepare_model hands fully_shard as mp_policy
    assert (policy.param_dtype, policy.reduce_dtype, policy.output_dtype) == (torch.bfloat16, torch.float32, None)


@pytest.mark.parametrize("output_dtype", [torch.bfloat16, None], ids=["accelerate-1.15", "accelerate-1.16"])
def test_fsdp2_outputs_keep_their_dtype_whatever_accelerate_chose(output_dtype):
    """accelerate 1.15 built the policy with output_dtype = the mixed precision (FSDP2 then casts the root module's
    outputs, and so TRL's loss, to bf16); 1.16 leaves it None. smoldist leaves None on either."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16, output_dtype=output_dtype)
    plugin = SimpleNamespace(mixed_precision_policy=policy)
    reduce_in_fp32(SimpleNamespace(fsdp_plugin=plugin, deepspeed_plugin=None))
    got = plugin.mixed_precision_policy
    assert (got.param_dtype, got.reduce_dtype, got.output_dtype) == (torch.bfloat16, torch.float32, None)


@pytest.mark.slow
def test_fsdp2_bf16_loss_as_trl_computes_it_is_float32(tmp_path):
    """Two gloo ranks under torch's fully_shard with the policy smoldist leaves (accelerate's FSDP cannot run without a
    GPU): TRL's fused-head loss comes back float32, and under accelerate 1.15's policy it came back bfloat16."""
    p = torchrun(Path(__file__).with_name("fsdp2_loss_dtype_worker.py"), str(tmp_path))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [s["rank"] for s in seen] == [0, 1] and {s["world_size"] for s in seen} == {2}
    for s in seen:
        assert s["sharded"], "the model was not sharded"  # every parameter a DTensor holding part of the whole
        assert s["smoldist"]["policy"] == ["torch.bfloat16", "torch.float32", "None"]
        assert s["smoldist"]["loss_dtype"] == s["smoldist"]["log_probs_dtype"] == "torch.float32"
        assert s["accelerate-1.15"]["loss_dtype"] == "torch.bfloat16"  # the test can fail: the old policy rounds it
        assert abs(s["smoldist"]["loss"] - s["unsharded_loss"]) < 0.05 * abs(s["unsharded_loss"])  # bf16 params


def test_deepspeed_config_keeps_what_the_user_set():
    config = {"communication_data_type": "bf16"}
    reduce_in_fp32(SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config, zero_stage=3)))
    assert config == {"communication_data_type": "bf16", "data_types": {"grad_accum_dtype": "fp32"}}


def test_deepspeed_bf16_engine_accumulates_16_micro_batches_in_fp32():
    p = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("ds_accum_worker.py")), str(free_port())],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    ours, default = res["smoldist"], res["deepspeed_default"]
    print({k: v["rel_error"] for k, v in res.items()})
    assert (ours["grad_accum_dtype"], ours["communication_data_type"]) == ("torch.float32", "torch.float32")
    assert default["grad_accum_dtype"] == "torch.bfloat16"
    assert ours["rel_error"] < 1e-6 and default["rel_error"] > 1e-3  # seen: 6.9e-10 vs 4.7e-3


@pytest.mark.slow
def test_zero2_bf16_run_reports_the_engine_accumulating_and_reducing_in_fp32(tmp_path, conversations_file):
    recipe = one_row_recipe(tmp_path, conversations_file, max_steps=2, save_steps=100)
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
            "train.global_batch_tokens=1024",
            "--accelerate-config",
            "cpu_zero2",
            "--num-processes",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env=dict(os.environ, TOKENIZERS_PARALLELISM="false"),
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert_one_job(out, 2)
    for rank in ranks(out):  # read from the DeepSpeed engine the trainer built (DeepSpeedEngine.get_data_types())
        assert rank["precision"] == {
            "mixed_precision": "bf16",
            "param_dtype": "torch.bfloat16",
            "grad_accum_dtype": "torch.float32",
            "reduce_dtype": "torch.float32",
        }
