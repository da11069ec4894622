"""W&B for a DPO run: one offline run per job, read back from the real wandb file, holding TRL's DPO metric names
and smoldist's throughput at every training log; a resumed job continues the same run."""

from __future__ import annotations

import pytest

from smoldist.distributed.preemption import STOPPED_EXIT_CODE
from smoldist.faults import SIGNAL_AT_STEP
from smoldist.train.wandb_offline import read_run
from tests.helpers import CONFIGS, accelerate
from tests.train.test_dpo_run import DPO_KEYS, dpo_recipe  # noqa: F401  (dpo_recipe: the fixture)
from tests.train.test_tracking import PERF, run_files, train

pytestmark = pytest.mark.slow  # two training processes (~50 s on 2 cores); SFT's W&B tests are in test_tracking.py
OFFLINE = ["tracking.wandb.mode=offline", "tracking.peak_tflops=0.5", "train.max_steps=4", "train.logging_steps=1"]


def test_dpo_offline_run_has_trls_metrics_and_throughput_in_one_run(dpo_recipe, tmp_path):  # noqa: F811
    out = tmp_path / "wb"
    first = train(dpo_recipe, out, *OFFLINE, env={SIGNAL_AT_STEP: "2"})
    assert first.returncode == STOPPED_EXIT_CODE, first.stderr[-3000:]
    second = train(dpo_recipe, out, *OFFLINE)
    assert second.returncode == 0, second.stderr[-3000:]
    runs = [read_run(f) for f in run_files(out)]
    assert len(runs) == 2 and len({r.run_id for r in runs}) == 1  # one run, two sessions (stopped, resumed)
    assert runs[0].run_id == (out / "wandb_run_id").read_text().strip()
    logs = [h for r in runs for h in r.history if "train/loss" in h]
    assert sorted(h["train/global_step"] for h in logs) == [1, 2, 3, 4]
    for h in logs:
        for key in (*DPO_KEYS, *PERF):
            assert f"train/{key}" in h, (key, sorted(h))
        assert h["train/perf/tokens_per_s_per_device"] > 0 and 0 < h["train/perf/mfu"] < 1
        assert 0 <= h["train/rewards/accuracies"] <= 1
    assert runs[0].config["smoldist/world_size"] == 1


def test_dpo_under_ddp_logs_one_run_from_the_main_process(dpo_recipe, tmp_path):  # noqa: F811
    out, home = tmp_path / "ddp", tmp_path / "home"
    home.mkdir()
    args = ["--config_file", str(CONFIGS / "cpu_ddp.yaml"), "-m", "smoldist.train", str(dpo_recipe), *OFFLINE]
    p = accelerate([*args, "train.max_steps=2", f"train.output_dir={out}"], env={"HOME": str(home)}, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    (only,) = run_files(out)  # one run for the job, not one per rank
    run = read_run(only)
    logs = [h for h in run.history if "train/loss" in h]
    assert [h["train/global_step"] for h in logs] == [1, 2]
    assert all(f"train/{key}" in h for h in logs for key in (*DPO_KEYS, *PERF))
    assert run.config["smoldist/world_size"] == 2 and run.config["smoldist/engine"] == "ddp"
