"""bench/gpu's device scripts (proof.sh, speed.sh, recipes.sh), checked without a GPU: each parses, fits one device
call (wheel install + every step's own timeout <= 540 s), has its CPU dry run wired, writes the results file its
issue names and no more files than the device returns; the results file survives a step that dies; the wheel set
is checked against metadata; the precision probe reads FSDP2's and DeepSpeed's live objects."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO, free_port

GPU = REPO / "bench" / "gpu"
SCRIPTS = {"proof.sh": "gpu_proof.json", "speed.sh": "train_throughput.json", "recipes.sh": "gpu_recipes.json"}
CALL_BUDGET_S = 540  # 9 minutes of the 10 a device call may run: the rest is the machine's start and the transfers
STEP = re.compile(r"^step\s+(\S+)\s+(\d+)\s", re.M)
sys.path.insert(0, str(GPU))
import results  # noqa: E402  (bench/gpu/results.py)


def install_timeout() -> int:
    return int(re.search(r"^INSTALL_TIMEOUT=(\d+)$", (GPU / "common.sh").read_text(), re.M).group(1))


@pytest.mark.parametrize("script", [*SCRIPTS, "common.sh"])
def test_every_script_parses(script):
    p = subprocess.run(["bash", "-n", str(GPU / script)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_each_script_fits_one_device_call_and_names_its_results_file(script):
    text = (GPU / script).read_text()
    steps = STEP.findall(text)
    assert len(steps) >= 4, steps
    assert len({name for name, _ in steps}) == len(steps), "step names must be unique: they key the results JSON"
    total = install_timeout() + sum(int(limit) for _, limit in steps)
    assert total <= CALL_BUDGET_S, f"{script}: install + steps = {total} s > {CALL_BUDGET_S} s"
    assert f'source "$(dirname "$0")/common.sh" {script.removesuffix(".sh")} {SCRIPTS[script]} "$@"' in text
    assert f"bash bench/gpu/{script}" in text and "--cpu-smoke" in text  # the device call and the dry run, documented
    assert f'run(command="bash bench/gpu/{script}", carry=[".whl"], timeout_s=600)' in (GPU / "README.md").read_text()


def test_the_dry_run_switch_reaches_every_step():
    common = (GPU / "common.sh").read_text()
    assert '[ "$arg" = --cpu-smoke ] && SMOKE=1' in common
    assert "export OUT WORK SMOKE" in common and 'export CUDA_VISIBLE_DEVICES=""' in common
    # what the device returns: at most 8 files from $OUT; each script writes its results JSON and one log there
    code = "\n".join(line for line in common.splitlines() if not line.lstrip().startswith("#"))
    assert re.findall(r'\$OUT/[^\s"]+', code) == ["$OUT/$RESULTS_FILE", "$OUT/$SCRIPT_NAME.log"]
    for helper in ("engines.py", "proof_checks.py", "speed_run.py", "recipe_runs.py"):  # SMOKE=1, or no CUDA seen
        text = (GPU / helper).read_text()
        assert "smoke()" in text or "torch.cuda.is_available()" in text, helper


def test_a_step_that_overran_or_died_is_recorded_failed_and_the_others_kept(tmp_path):
    path = tmp_path / "r.json"
    results.main(["init", str(path), "proof", "full"])
    results.record(path, "env", {"ok": True, "device": "H200"})
    results.main(["step", str(path), "env", "0", "3", "20"])
    results.main(["step", str(path), "kernels", "124", "70", "70"])  # killed by its timeout before recording
    results.record(path, "flops", {"ok": True})
    results.main(["step", str(path), "flops", "1", "9", "40"])  # recorded ok, then crashed
    results.record(path, "fsdp2", {"ok": None, "skipped": results.SKIPPED_NO_CUDA})
    results.main(["step", str(path), "fsdp2", "0", "0", "50"])
    checks = json.loads(path.read_text())["checks"]
    assert checks["env"]["ok"] is True and checks["env"]["seconds"] == 3
    assert checks["kernels"] == {
        "exit": 124,
        "seconds": 70,
        "limit_s": 70,
        "ok": False,
        "error": "timed out after 70 s",
    }
    assert checks["flops"]["ok"] is False and checks["flops"]["error"] == "exit 1"
    assert checks["fsdp2"]["ok"] is None and checks["fsdp2"]["skipped"] == "no cuda"
    assert "skipped: no cuda" in results.summary(path)


def test_fetch_wheels_has_a_help_and_checks_a_wheel_set_by_name(tmp_path):
    p = subprocess.run(
        [sys.executable, str(GPU / "fetch_wheels.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0 and "--check" in p.stdout and "--without" in p.stdout
    assert not (tmp_path / ".whl").exists()
    sys.path.insert(0, str(GPU))
    import fetch_wheels

    for name in ("trl-1.16.0-py3-none-any.whl", "trl-1.15.0-py3-none-any.whl", "hjson-3.1.0-py3-none-any.whl"):
        (tmp_path / name).touch()
    problems = fetch_wheels.check(tmp_path, {"trl": "1.16.0", "deepspeed": "0.19.8"})
    assert problems == [
        "missing: deepspeed==0.19.8",
        "two versions of trl: 1.15.0, 1.16.0 (pip install stops on both)",
        "not needed: hjson",
    ]


def test_fetch_wheels_carries_the_locked_versions():
    """The GPU run uses the versions CI passed on: requirements.lock's, for the packages and what they pull in."""
    sys.path.insert(0, str(GPU))
    import fetch_wheels

    from tests.lock_drift import read_lock

    lock = read_lock()
    pins = fetch_wheels.needed(fetch_wheels.WANTED, lock)
    assert set(fetch_wheels.WANTED) <= set(pins)
    assert all(lock[name] == version for name, version in pins.items())
    assert "torch" not in pins  # the GPU image's own CUDA build


FSDP2_PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[2])
import torch, torch.distributed as dist
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from engine_probe import fsdp2_policies, fsdp2_reduces_in_fp32
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
dist.init_process_group("gloo", rank=0, world_size=1)
out = {}
for name, reduce in (("fp32", torch.float32), ("default", None)):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=reduce)
    for layer in model:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    found = fsdp2_policies(model)
    out[name] = [found, fsdp2_reduces_in_fp32(found, "float32")]
print("RESULT" + json.dumps(out))
"""


def run_probe(code: str) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", code, str(free_port()), str(GPU)], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return json.loads(p.stdout.split("RESULT", 1)[1])


def test_the_probe_reads_the_mp_policy_fully_shard_gave_the_model():
    """FSDP2 (torch fully_shard) runs on CPU with gloo: the probe's reading of the live policy, both ways."""
    out = run_probe(FSDP2_PROBE)
    assert out["fp32"] == [
        [{"param_dtype": "bfloat16", "reduce_dtype": "float32", "output_dtype": None, "cast_forward_inputs": True}],
        True,
    ]
    assert out["default"][0][0]["reduce_dtype"] is None and out["default"][1] is False  # reduces in bf16


DEEPSPEED_PROBE = """
import json, os, sys
sys.path.insert(0, sys.argv[2])
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
                  DS_ACCELERATOR="cpu")
import deepspeed, torch
from engine_probe import deepspeed_precision
out = {}
fp32 = {"communication_data_type": "fp32", "data_types": {"grad_accum_dtype": "fp32"}}
for name, extra in (("default", {}), ("fp32", fp32)):
    cfg = {"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True}, "zero_optimization": {"stage": 2}, **extra}
    model = torch.nn.Linear(8, 8)
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=cfg)
    ds = deepspeed_precision(engine)
    out[name] = [ds["communication_data_type"], ds["grad_accum_dtype"], ds["optimizer_master_dtype"]]
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_the_probe_reads_the_dtypes_deepspeed_gave_the_engine():
    """A bf16 engine communicates and accumulates in bf16 unless its config says fp32, over fp32 masters in its
    optimizer (the first run on a machine JIT-builds DeepSpeed's CPU communication op: minutes)."""
    out = run_probe(DEEPSPEED_PROBE)
    assert out == {"default": ["bfloat16", "bfloat16", "float32"], "fp32": ["float32", "float32", "float32"]}


@pytest.mark.slow
def test_the_recipes_dry_run_runs_every_step_to_a_result(tmp_path):
    """recipes.sh --cpu-smoke end to end (~4 min on 2 cores): every step ok, or skipped for want of CUDA."""
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "WORK", "RESULTS", "SMOKE")}
    env.update(OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), PY=sys.executable)
    p = subprocess.run(
        ["bash", str(GPU / "recipes.sh"), "--cpu-smoke"],
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["gpu_recipes.json", "recipes.log"]
    data = json.loads((tmp_path / "out" / "gpu_recipes.json").read_text())
    assert data["mode"] == "cpu-smoke" and data["device"] == "cpu" and data["versions"]["trl"]
    names = [name for name, _ in STEP.findall((GPU / "recipes.sh").read_text())]
    assert list(data["checks"]) == names
    for name, check in data["checks"].items():
        assert check["ok"] or check.get("skipped") == "no cuda", (name, check)
    assert data["checks"]["1.7B-shipped"]["tokens_per_s_per_gpu"] > 0


def test_a_failed_wheel_install_still_writes_a_results_file_saying_so(tmp_path):
    """The device returns only $OUT: an install that fails must leave a results file there, not just a log."""
    import shutil

    repo = tmp_path / "repo"
    (repo / "bench" / "gpu").mkdir(parents=True)
    for name in ("common.sh", "results.py", "proof.sh"):
        shutil.copy(GPU / name, repo / "bench" / "gpu" / name)
    (repo / ".whl").mkdir()
    (repo / ".whl" / "broken-0.0-py3-none-any.whl").write_bytes(b"not a wheel")
    py = tmp_path / "py"  # a python that sees no site-packages: no trl here, so the install runs (and fails)
    py.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    py.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "WORK", "RESULTS", "SMOKE", "PYTHONPATH")}
    env.update(OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), PY=str(py))
    p = subprocess.run(
        ["bash", str(repo / "bench" / "gpu" / "proof.sh"), "--cpu-smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert p.returncode == 1 and "wheel install failed" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "gpu_proof.json").read_text())
    assert data["mode"] == "cpu-smoke" and data["checks"]["wheel-install"]["ok"] is False
    assert data["checks"]["wheel-install"]["exit"] != 0


def test_proof_limits_keep_a_margin_over_the_recorded_cpu_dry_run():
    """Each proof.sh step's limit is >= 1.5x that step's time in the CPU dry run (set-up a cold GPU machine pays too:
    launch, imports, DeepSpeed's engine), read from the committed dry-run results."""
    dry = json.loads((REPO / "bench" / "results" / "gpu_proof-cpu-smoke.json").read_text())
    assert dry["mode"] == "cpu-smoke"
    limits = {name: int(limit) for name, limit in STEP.findall((GPU / "proof.sh").read_text())}
    assert set(limits) == set(dry["checks"])  # the dry run is of this script's steps
    for name, check in dry["checks"].items():
        assert limits[name] >= 1.5 * check["seconds"], (name, limits[name], check["seconds"])
