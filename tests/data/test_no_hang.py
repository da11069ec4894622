"""Preparation never hangs: not after training installed its stop handler, not when a worker dies.

Each case runs in its own process session under a hard timeout, and the whole group is killed if it
overruns, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from tests.helpers import REPO, recipe_dict, write_jsonl, write_recipe

HARD_TIMEOUT_S = 90


def run_isolated(code: str, timeout: int = HARD_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run `code` in a fresh session; on overrun kill the whole process group (workers included)."""
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"hung for {timeout}s\n{out[-2000:]}\n{err[-2000:]}") from None
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def many_conversations(n: int) -> list[dict]:
    return [
        {
            "messages": [
                m
                for t in range(4)
                for m in (
                    {"role": "user", "content": f"Question {i}.{t}: what is {i} plus {t}? " * 3},
                    {"role": "assistant", "content": f"{i} plus {t} is {i + t}. " * 4},
                )
            ]
        }
        for i in range(n)
    ]


def test_prepare_with_workers_after_the_stop_handler_was_installed(tmp_path):
    data = write_jsonl(tmp_path / "many.jsonl", many_conversations(2000))
    recipe = write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(data)}], data={"num_proc": 2, "seq_len": 512}))
    p = run_isolated(f"""
        from smoldist.config import load_recipe
        from smoldist.distributed.preemption import StopFlag
        from smoldist.store.build import prepare

        StopFlag().install()  # what an earlier train.run() in the same process leaves behind
        r = load_recipe({str(recipe)!r})
        for i in range(12):
            res = prepare(r.model, r.data, force=True, verbose=False)
            print("prepared", i, res.manifest["counts"]["documents"], flush=True)
        """)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("prepared") == 12 and "prepared 11 2000" in p.stdout


def test_a_worker_that_dies_fails_prepare_with_a_clear_error(tmp_path):
    data = write_jsonl(tmp_path / "many.jsonl", many_conversations(3000))
    recipe = write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(data)}], data={"num_proc": 2, "seq_len": 512}))
    p = run_isolated(f"""
        import os, signal
        import smoldist.data.encode as enc
        from smoldist.config import load_recipe
        from smoldist.store.build import prepare

        real = enc.Encoder.encode
        def encode(self, docs):  # the OOM killer's SIGKILL, in a worker, on its second batch
            if "Question 1000.0:" in docs[0].messages[0]["content"]:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, docs)
        enc.Encoder.encode = encode
        r = load_recipe({str(recipe)!r})
        prepare(r.model, r.data, verbose=False)
        """)
    assert p.returncode == 1 and "a tokenizer worker process died" in p.stderr, p.stderr[-3000:]
    assert not any((tmp_path / "store").glob("*/manifest.json"))  # nothing that looks complete was left


def test_training_restores_the_signal_handlers_it_replaced(tiny_recipe):
    from smoldist.config import load_recipe
    from smoldist.train.run import run

    mine = lambda signum, frame: None  # noqa: E731
    before = signal.signal(signal.SIGTERM, mine)
    try:
        run(load_recipe(tiny_recipe, ["train.max_steps=1"]))
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)
