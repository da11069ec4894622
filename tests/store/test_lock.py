"""Preparation outside collectives: one process per job builds a missing store, the others wait on it (slow).

The build is slowed down with the documented testing aid SMOLDIST_TEST_BUILD_DELAY_S (the lock holder
sleeps before building), so that it outlasts a tiny `train.ddp_timeout`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import CONFIGS, REPO, accelerate, assert_one_job, one_row_recipe, ranks

pytestmark = pytest.mark.slow


@pytest.fixture
def recipe(tmp_path, conversations_file):
    return one_row_recipe(tmp_path, conversations_file, max_steps=3, save_steps=100)


def test_concurrent_prepares_build_the_store_once(recipe, tmp_path):
    env = dict(
        os.environ, SMOLDIST_TEST_BUILD_DELAY_S="6", SMOLDIST_STORE_WAIT_REPORT_S="1", TOKENIZERS_PARALLELISM="false"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "smoldist", "prepare", str(recipe)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    builders = [o for o in outs if "smoldist prepare: building store" in o]
    assert len(builders) == 1, outs
    waiter = next(o for o in outs if o is not builders[0])
    assert "smoldist prepare: waiting for" in waiter and "no collective is pending" in waiter, waiter
    assert "reusing store" in waiter
    stores = [p for p in (tmp_path / "store").iterdir() if not p.name.startswith(".")]
    assert len(stores) == 1 and (stores[0] / "manifest.json").is_file()
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".tmp-")], "a temp dir was left behind"


def test_a_store_build_longer_than_ddp_timeout_still_trains(recipe, tmp_path):
    # ranks used to wait for the build in a barrier (main_process_first) of a group created without ddp_timeout
    p = accelerate(
        [
            "--config_file",
            str(CONFIGS / "cpu_ddp.yaml"),
            "--num_processes",
            "2",
            "-m",
            "smoldist.train",
            str(recipe),
            "train.ddp_timeout=10",
        ],
        env={"SMOLDIST_TEST_BUILD_DELAY_S": "25", "SMOLDIST_STORE_WAIT_REPORT_S": "5"},
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert out.count("smoldist prepare: building store") == 1, out[-3000:]
    assert_one_job(tmp_path / "run", 2)
    assert {r["pg_timeout_s"] for r in ranks(tmp_path / "run")} == {10.0}, "the process group ignored train.ddp_timeout"
