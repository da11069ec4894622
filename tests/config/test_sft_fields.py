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
    p = subprocess.run(
        [sys.executable, "-c", PROBE, str(tiny_recipe)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"code": 0, "heavy": []}, out


def test_checked_in_table_equals_installed_sftconfig():
    assert installed_sft_fields() == SFT_FIELDS  # on failure: python -m smoldist.config.sft_fields, paste the table


def test_table_round_trips_through_parse_type():
    for name, text in SFT_FIELDS.items():
        assert render_type(parse_type(text)) == text, name


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"learnig_rate": 1}, "did you mean 'learning_rate'?"),
        ({"num_train_epochs": "many"}, "train.num_train_epochs: expected a number"),
        ({"save_total_limit": "two"}, "train.save_total_limit: expected an integer"),
        ({"bf16": "maybe"}, "train.bf16: expected true or false"),
        ({"max_length": 9}, "set by smoldist from data.seq_len"),
    ],
)
def test_train_section_still_validated(raw, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        build_train_section(raw)


def test_train_section_types_values_like_sftconfig():
    typed = build_train_section(
        {
            "learning_rate": "3e-4",
            "report_to": "wandb,tensorboard",
            "eval_strategy": "no",
            "global_batch_tokens": "4096",
            "bf16": "false",
        }
    )
    assert typed == {
        "learning_rate": 3e-4,
        "report_to": "wandb,tensorboard",
        "eval_strategy": "no",
        "global_batch_tokens": 4096,
        "bf16": False,
    }


def test_checked_in_choices_equal_installed_enums():
    from smoldist.config.sft_fields import SFT_CHOICES, installed_sft_choices

    assert installed_sft_choices() == SFT_CHOICES  # on failure: python -m smoldist.config.sft_fields, paste the table


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"lr_scheduler_type": "cosin"}, "train.lr_scheduler_type: 'cosin' is not one of linear, cosine, "),
        (
            {"eval_strategy": "epochs"},
            "train.eval_strategy: 'epochs' is not one of no, steps, epoch; did you mean 'epoch'",
        ),
        ({"save_strategy": "step"}, "train.save_strategy: 'step' is not one of no, steps, epoch, best"),
    ],
)
def test_train_choices_checked_when_the_recipe_loads(raw, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        build_train_section(raw)


def test_evaluating_without_an_eval_split_is_refused_when_the_recipe_loads(tiny_recipe):
    from smoldist.config import load_recipe

    with pytest.raises(RecipeError, match=r"train.eval_strategy: 'epoch' needs an eval split; set data.eval_fraction"):
        load_recipe(tiny_recipe, ["train.eval_strategy=epoch", "data.eval_fraction=0"])
    assert load_recipe(tiny_recipe, ["train.eval_strategy=epoch", "data.eval_fraction=0.1"]).data.eval_fraction == 0.1
