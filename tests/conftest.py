"""Fixtures for every test: a hard timeout, a small conversation file and a tiny recipe, the real SmolLM2.

The helpers they are made of (tiny recipes, JSONL writers) live in tests/helpers.py, importable by any test."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import CONVERSATIONS, recipe_dict, write_jsonl, write_recipe

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEST_HARD_TIMEOUT_S = int(os.environ.get("SMOLDIST_TEST_HARD_TIMEOUT_S", "1200"))


@pytest.fixture(autouse=True)
def hard_timeout(request):
    """No test hangs CI: past the limit, every thread's traceback is printed and the pytest process exits 1.

    Subprocess tests also time out their children; this covers in-process ones (worker pools, training).
    faulthandler's C-level timer, 30 s later, ends it even if a thread holds the GIL."""

    def expire():
        capture = request.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            capture.suspend_global_capture(in_=False)  # so that the report reaches the CI log
        print(
            f"\n{request.node.nodeid} ran past {TEST_HARD_TIMEOUT_S} s (SMOLDIST_TEST_HARD_TIMEOUT_S); "
            "tracebacks follow, then pytest exits",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(1)

    timer = threading.Timer(TEST_HARD_TIMEOUT_S, expire)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(TEST_HARD_TIMEOUT_S + 30, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    timer.cancel()


@pytest.fixture
def conversations_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "chats.jsonl", CONVERSATIONS * 5)


@pytest.fixture
def tiny_recipe(tmp_path: Path, conversations_file: Path) -> Path:
    return write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(conversations_file), "format": "messages"}]))


@pytest.fixture(scope="session")
def real_instruct() -> Path:
    """The real SmolLM2-135M-Instruct as an HF directory (tests marked `real`; see tests/real_model.py)."""
    from tests.real_model import real_smollm2_instruct

    return real_smollm2_instruct()


@pytest.fixture(scope="session")
def real_base() -> Path:
    """The real SmolLM2-135M weights with a base-model tokenizer config (eos id 0, no chat template)."""
    from tests.real_model import real_smollm2_base

    return real_smollm2_base()


@pytest.fixture(scope="session")
def real_gemma() -> Path:
    """The real Gemma 3 270M (base) as an HF directory, Gemma's chat template written in (tests/real_model.py)."""
    from tests.real_model import real_gemma3_base

    return real_gemma3_base()
