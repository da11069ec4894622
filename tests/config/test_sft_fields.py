"""`smoldist prepare` validates the `train` section without importing torch, transformers or trl,
against a checked-in table of SFTConfig's fields that must equal the installed SFTConfig."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from smoldist.config.load import build_train_section
from smoldist.config.sft_fields import SFT_FIELDS, installed_sft_fields, parse_type, render_type
from smoldist.errors import RecipeError

PROBE = """
import json, sys
from smoldist.cli import main
code = main(["prepare", sys.argv[1]])
heavy = sorted(m for m in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "matplotlib.pyplot")
               if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def test_prepare_imports_no_torch_transformers_or_trl(tiny_recipe):
    p = subprocess.run([sys.executable, "-c", PROBE, str(tiny_recipe)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ))
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"code": 0, "heavy": []}, out


def test_checked_in_table_equals_installed_sftconfig():
    assert installed_sft_fields() == SFT_FIELDS  # on failure: python -m smoldist.config.sft_fields, paste the table


def test_table_round_trips_through_parse_type():
    for name, text in SFT_FIELDS.items():
        assert render_type(parse_type(text)) == text, name


@pytest.mark.parametrize("raw, message", [
    ({"learnig_rate": 1}, "did you mean 'learning_rate'?"),
    ({"num_train_epochs": "many"}, "train.num_train_epochs: expected a number"),
    ({"save_total_limit": "two"}, "train.save_total_limit: expected an integer"),
    ({"bf16": "maybe"}, "train.bf16: expected true or false"),
    ({"max_length": 9}, "set by smoldist from data.seq_len"),
])
def test_train_section_still_validated(raw, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        build_train_section(raw)


def test_train_section_types_values_like_sftconfig():
    typed = build_train_section({"learning_rate": "3e-4", "report_to": "wandb,tensorboard", "eval_strategy": "no",
                                 "global_batch_tokens": "4096", "bf16": "false"})
    assert typed == {"learning_rate": 3e-4, "report_to": "wandb,tensorboard", "eval_strategy": "no",
                     "global_batch_tokens": 4096, "bf16": False}
