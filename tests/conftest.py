"""Shared fixtures: tiny recipes on the bundled demo tokenizer and small conversation files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
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
