"""`smoldist train` running a launch: a rank's one-line refusal is the job's one line, with the rank's exit status,
not the launcher's traceback (the two-process run is marked slow)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from smoldist.cluster.spawn import OneLineErrors
from tests.helpers import REPO, one_row_recipe

LAUNCHER_REPORT = b"""Traceback (most recent call last):
  File "/x/accelerate/commands/launch.py", line 1, in <module>
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
smoldist.train FAILED
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 0 (local_rank: 0)
  exitcode  : 2 (pid: 4242)
============================================================
"""


def filtered(*chunks: bytes) -> tuple[bytes, OneLineErrors]:
    read, write = os.pipe()
    sink = io.BytesIO()
    errors = OneLineErrors(os.fdopen(read, "rb"), sink)
    with os.fdopen(write, "wb") as w:
        for chunk in chunks:
            w.write(chunk)
            w.flush()
    errors.thread.join(timeout=10)
    return sink.getvalue(), errors


def test_a_ranks_error_line_ends_the_output_and_gives_the_exit_status():
    line = b"smoldist: error: data.sources.0.path: /x/missing.jsonl does not exist\n"
    out, errors = filtered(b"  0%|   | 0/9 [00:00<?]\r", b"W1207 warning from torch\n", line, line, LAUNCHER_REPORT)
    assert out == b"  0%|   | 0/9 [00:00<?]\rW1207 warning from torch\n" + line  # one copy, no launcher report
    assert errors.exit_status(1) == 2  # the rank's status, not the launcher's 1
    out, errors = filtered(
        b"smoldist | step 1 | loss 3.2\n", LAUNCHER_REPORT.replace(b"exitcode  : 2", b"exitcode : 1")
    )
    assert out.startswith(b"smoldist | step 1") and b"ChildFailedError" in out  # a crash keeps its traceback
    assert errors.exit_status(1) == 1


@pytest.mark.slow
def test_a_rank_refusal_under_the_launcher_is_one_line_and_exit_2(tmp_path, conversations_file):
    recipe = one_row_recipe(tmp_path, conversations_file, max_steps=2, save_steps=100)
    missing = tmp_path / "missing.jsonl"  # found missing by each rank, when it plans the store
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    p = subprocess.run(
        [sys.executable, "-m", "smoldist", "train", str(recipe), f"data.sources.0.path={missing}"]
        + ["--num-processes", "2", "--main-process-port", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(env, OMP_NUM_THREADS="1"),
        timeout=600,
    )
    # before: exit 1, one error line per rank, then the launcher's ~30-line ChildFailedError traceback
    assert p.returncode == 2, p.stderr[-3000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("smoldist: error:")]
    assert len(errors) == 1 and "missing.jsonl" in errors[0], p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "ChildFailedError" not in p.stderr, p.stderr[-3000:]
