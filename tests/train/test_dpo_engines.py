"""DPO under DeepSpeed ZeRO-2 and ZeRO-3, ZeRO-3 also with LoRA (2 gloo processes, real `accelerate launch`): one
job, the same per-step loss as one process with twice the accumulation, and the same reference log-probs (the same
cache key, and the same values when the 2-process run computes them itself). The model is a saved checkpoint, so
ZeRO-3 builds it partitioned (zero.Init): the reference pass and its key must see the whole weights. FSDP2:
tests/distributed/test_dpo_fsdp2.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from smoldist.errors import NonFiniteError
from smoldist.faults import NAN_LOSS_AT_STEP
from tests.helpers import CONFIGS, REPO, accelerate, assert_one_job, losses, ranks, save_tiny_base
from tests.train.test_dpo_run import dpo_recipe_file, log_history

pytestmark = pytest.mark.slow

LORA = ["model.lora.r=4", "model.lora.alpha=8", "model.lora.dropout=0", "train.learning_rate=1e-2"]
# 2 rows of 256: k=2 on 1 process, 1 on 2; an evaluation at step 3 (top-up rows: every rank runs the same batches)
COMMON = ["train.global_batch_tokens=512", "train.max_steps=3", "train.eval_strategy=steps", "train.eval_steps=3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(folder, the DPO recipe, a saved tiny base model) shared by the module's runs."""
    tmp = tmp_path_factory.mktemp("dpo-engines")
    return tmp, dpo_recipe_file(tmp), save_tiny_base(tmp / "base")


@pytest.fixture(scope="module")
def one_process(setup):
    """one_process(lora) -> (recipe, overrides, the 1-process run's dir, the reference folder and its arrays): each
    run once for the module. LoRA's reference is the base as loaded, the same folder as full fine-tuning's."""
    tmp, recipe, base = setup
    done = {}

    def baseline(lora: bool):
        if lora not in done:
            model = ["model.init=", f"model.name_or_path={base}", *(LORA if lora else [])]
            out = tmp / ("one-lora" if lora else "one")
            args = [str(recipe), *model, *COMMON, f"train.output_dir={out}"]
            p = accelerate(["--num_processes", "1", "-m", "smoldist.train", *args], timeout=600)
            assert p.returncode == 0, p.stderr[-4000:]
            assert "grad accumulation 2" in p.stdout and "reference log-probs" in p.stdout
            (folder,) = (f for f in (tmp / "store").glob("*/reference/*") if f.is_dir())
            arrays = {name: np.load(folder / f"{name}.npy") for name in ("train", "eval")}
            done[lora] = recipe, model, out, folder, arrays
        return done[lora]

    return baseline


@pytest.mark.timeout(1500)
@pytest.mark.parametrize(
    "config, engine, lora",
    [
        ("cpu_zero2", "deepspeed-zero2", False),
        ("cpu_zero3", "deepspeed-zero3", False),
        ("cpu_zero3", "deepspeed-zero3", True),
    ],
)
def test_dpo_under_deepspeed_is_one_job_and_matches_one_process(one_process, config, engine, lora):
    recipe, model, one, folder, arrays = one_process(lora)
    shutil.rmtree(folder)  # this run computes the reference itself, sharded over its 2 ranks
    out = one.parent / f"{config}{'-lora' if lora else ''}"
    cfg = str(CONFIGS / f"{config}.yaml")
    p = accelerate(
        ["--config_file", cfg, "-m", "smoldist.train", str(recipe), *model, *COMMON, f"train.output_dir={out}"],
        timeout=900,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert "grad accumulation 1" in p.stdout
    assert "reference log-probs computed for 32 pairs" in p.stdout and "2 rank(s)" in p.stdout
    if engine == "deepspeed-zero3":
        assert "(built partitioned, ZeRO-3 zero.Init)" in p.stdout
    assert folder.is_dir(), "the 2-process run's reference key differs from the 1-process run's"
    for name, values in arrays.items():  # the same reference, computed over 2 ranks
        np.testing.assert_allclose(np.load(folder / f"{name}.npy"), values, rtol=0, atol=1e-5)
    assert_one_job(out, 2)
    assert {r["engine"] for r in ranks(out)} == {engine}
    if lora:
        assert "trainable: LoRA" in p.stdout and (out / "adapter_model.safetensors").is_file()
    a, b = losses(one), losses(out)
    assert len(a) == len(b) == 3 and a == pytest.approx(b, rel=1e-4), (a, b)
    ra = [h["rewards/accuracies"] for h in log_history(one)]
    rb = [h["rewards/accuracies"] for h in log_history(out)]
    assert ra == pytest.approx(rb, abs=1e-6)
    ea, eb = (evaluations(d) for d in (one, out))
    assert len(ea) == len(eb) == 1 and ea[0]["eval_loss"] == pytest.approx(eb[0]["eval_loss"], rel=1e-4), (ea, eb)
    assert ea[0]["eval_rewards/accuracies"] == pytest.approx(eb[0]["eval_rewards/accuracies"], abs=1e-6)


def evaluations(run_dir) -> list[dict]:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return [h for h in state["log_history"] if "eval_loss" in h]


@pytest.mark.timeout(900)
def test_a_non_finite_dpo_loss_under_zero3_stops_the_run(setup):
    """The non-finite stop (train/nonfinite.py) with the DPO loss, under ZeRO-3 bf16: DeepSpeed skips the step."""
    tmp, recipe, base = setup
    out = tmp / "nonfinite"
    cmd = [sys.executable, "-m", "smoldist", "train", str(recipe), "model.init=", f"model.name_or_path={base}"]
    cmd += [
        f"train.output_dir={out}",
        "model.dtype=bfloat16",
        "--accelerate-config",
        "cpu_zero3",
        "--num-processes",
        "2",
    ]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", **{NAN_LOSS_AT_STEP: "2"})
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    err = p.stdout[-3000:] + p.stderr[-3000:]
    assert p.returncode == NonFiniteError.exit_code, err
    line = p.stderr.split("smoldist: error: step 2:", 1)[1].split("\n", 1)[0]
    assert "the loss is non-finite" in line and "DeepSpeed skipped this step" in line, err
    assert not (out / "model.safetensors").exists()
