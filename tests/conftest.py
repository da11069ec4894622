"""Shared fixtures: tiny recipes on the bundled demo tokenizer and small conversation files."""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
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
        print(f"\n{request.node.nodeid} ran past {TEST_HARD_TIMEOUT_S} s (SMOLDIST_TEST_HARD_TIMEOUT_S); "
              "tracebacks follow, then pytest exits", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(1)

    timer = threading.Timer(TEST_HARD_TIMEOUT_S, expire)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(TEST_HARD_TIMEOUT_S + 30, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    timer.cancel()


TINY_INIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 512, "tie_word_embeddings": True}

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "2 plus 3 is 5."}]},
    {"messages": [{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": "Hello!"},
                  {"role": "assistant", "content": "Hello! How can I help you today?"},
                  {"role": "user", "content": "What colour is snow?"}, {"role": "assistant", "content": "Snow is white."}]},
    {"messages": [{"role": "user", "content": "Ünïcödé ✓ 🚀?"}, {"role": "assistant", "content": "Ja, 🚀 ✓."}]},
    {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]},
]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records))
    return path


def recipe_dict(tmp_path: Path, sources: list[dict], **sections) -> dict:
    raw = {
        "model": {"init": dict(TINY_INIT), "tokenizer": "pkg:demo/tokenizer", "dtype": "float32"},
        "data": {"sources": sources, "seq_len": 128, "store": str(tmp_path / "store"), "num_proc": 1},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "per_device_train_batch_size": 2,
                  "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 2, "gradient_checkpointing": False,
                  "seed": 0, "dataloader_num_workers": 0},
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    for section, values in sections.items():
        raw[section].update(values)
    return raw


def write_recipe(tmp_path: Path, raw: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture
def conversations_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "chats.jsonl", CONVERSATIONS * 5)


@pytest.fixture
def tiny_recipe(tmp_path: Path, conversations_file: Path) -> Path:
    return write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(conversations_file), "format": "messages"}]))


@pytest.fixture(scope="session")
def real_instruct() -> Path:
    """The real SmolLM2-135M-Instruct as an HF directory (tests marked `real`; see tests/real_model.py)."""
    from real_model import real_smollm2_instruct

    return real_smollm2_instruct()


@pytest.fixture(scope="session")
def real_base() -> Path:
    """The real SmolLM2-135M weights with a base-model tokenizer config (eos id 0, no chat template)."""
    from real_model import real_smollm2_base

    return real_smollm2_base()
