"""Elastic resume: a run stopped by the real warning signal continues on another world size (marked slow).

Each case stops a run with SIGUSR1 after step STOP (SIGNAL_AT_STEP), then resumes it with a different number
of processes; `train.global_batch_tokens` is fixed, so gradient accumulation adapts (4 on 1 process, 2 on
2) and the loss history must equal an uninterrupted 1-process run's. Cases as data, one runner.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoldist.distributed.checkpoints import COMPLETE
from smoldist.distributed.preemption import STOPPED_EXIT_CODE
from smoldist.faults import SIGNAL_AT_STEP
from tests.helpers import CONFIGS, CONVERSATIONS, accelerate, assert_one_job, recipe_dict, write_jsonl, write_recipe

pytestmark = pytest.mark.slow
STEPS, STOP = 8, 4
COMMON = [
    "train.global_batch_tokens=512",
    "train.logging_steps=1",
    f"train.max_steps={STEPS}",
    "train.save_steps=100",
    "train.per_device_train_batch_size=1",
]  # 1 row x 128 tokens: accumulation 4 on 1 process, 2 on 2
# (name, accelerate config or None for a plain 1-process launch, processes before, processes after)
CASES = [
    ("ddp-2to1", "cpu_ddp", 2, 1),
    ("ddp-1to2", "cpu_ddp", 1, 2),
    ("zero2-2to1", "cpu_zero2", 2, 1),
    ("zero3-2to1", "cpu_zero3", 2, 1),
    ("zero3-1to2", "cpu_zero3", 1, 2),
]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("elastic")
    data = write_jsonl(root / "chats.jsonl", CONVERSATIONS * 40)
    return write_recipe(root, recipe_dict(root, [{"path": str(data)}], train={"output_dir": str(root / "unused")}))


@pytest.fixture(scope="module")
def reference(recipe) -> list[float]:
    """The uninterrupted run: one process, accumulation 4."""
    out = recipe.parent / "reference"
    p = accelerate(["--num_processes", "1", "-m", "smoldist.train", str(recipe), *COMMON, f"train.output_dir={out}"])
    assert p.returncode == 0, p.stderr[-4000:]
    return losses(out)


def losses(run_dir: Path) -> list[float]:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def stopped_with_checkpoint(p) -> bool:
    """A clean stop: 0 under a launcher (so torchrun/srun kill no saver), 3 for a process on its own
    (smoldist.distributed.preemption.stopped_exit_code); the caller checks the stop line and the checkpoint marker."""
    code = STOPPED_EXIT_CODE  # a 1-process accelerate launch runs python itself, reports 3 as 1 and names it
    return p.returncode in (0, code) or f"exitcode  : {code}" in p.stderr or f"non-zero exit status {code}." in p.stderr


def launch(config: str | None, processes: int, recipe: Path, out: Path, env: dict | None = None):
    cfg = ["--config_file", str(CONFIGS / f"{config}.yaml")] if config and (processes > 1 or "zero" in config) else []
    return accelerate(
        [
            *cfg,
            "--num_processes",
            str(processes),
            "-m",
            "smoldist.train",
            str(recipe),
            *COMMON,
            f"train.output_dir={out}",
        ],
        env=env,
    )


@pytest.mark.parametrize("name, config, before, after", CASES, ids=[c[0] for c in CASES])
def test_stopped_run_resumes_on_another_world_size_and_matches(recipe, reference, name, config, before, after):
    out = recipe.parent / name
    first = launch(config, before, recipe, out, env={SIGNAL_AT_STEP: str(STOP)})
    assert stopped_with_checkpoint(first), first.stderr[-4000:]
    assert f"stopped by signal 10 after step {STOP}" in first.stdout
    marker = json.loads((out / f"checkpoint-{STOP}" / COMPLETE).read_text())
    assert marker["world_size"] == before, marker

    second = launch(config, after, recipe, out)
    assert second.returncode == 0, second.stderr[-4000:]
    assert f"resumed step {STOP} on {after} processes (was {before})" in second.stdout, second.stdout[-3000:]
    assert f"grad accumulation {4 // after}" in second.stdout
    if after > 1:
        assert_one_job(out, after)
        # the new rank's RNG cannot be restored: named in the log; the losses below show dropout-free SFT does not care
        assert "RNG state not restored for rank(s) 1" in second.stdout
        assert json.loads((out / "config.json").read_text())["attention_dropout"] == 0.0
    if "zero" in config:
        assert "to a DeepSpeed universal checkpoint" in second.stdout
        assert (out / f"checkpoint-{STOP}" / "latest_universal").is_file()
    state = json.loads((out / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, STEPS + 1))
    got = losses(out)
    worst = max(abs(a - b) / abs(a) for a, b in zip(reference, got))
    print(
        f"elastic {name}: max relative loss difference {worst:.2e} over {STEPS} steps; "
        f"reference {[round(x, 6) for x in reference]} resumed {[round(x, 6) for x in got]}"
    )
    # the issue asks < 1e-3; every case measures < 1e-6. 1e-5 catches a shared Adam step after a ZeRO-3
    # universal load (smoldist.distributed.elastic.untie_optimizer_steps), which drifts by 2.2e-4
    assert worst < 1e-5, (reference, got)


def test_resume_onto_a_world_that_does_not_divide_refuses_on_every_rank_before_loading(recipe):
    """3 processes cannot continue a global batch of 4 micro-batches: refused before the checkpoint is read."""
    out = recipe.parent / "three"
    (out / "checkpoint-4").mkdir(parents=True)  # only the marker: the check must not need anything else
    (out / "checkpoint-4" / COMPLETE).write_text(json.dumps({"step": 4, "world_size": 2}))
    p = launch("cpu_ddp", 3, recipe, out)
    assert p.returncode != 0
    assert "saved on 2 processes) on 3 processes" in p.stderr and "world sizes that work: 1, 2, 4" in p.stderr, (
        p.stderr[-3000:]
    )
    assert "resuming from" not in p.stdout
