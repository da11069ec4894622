"""Every trl.SFTConfig key is honoured, derived or refused, and a key a new trl adds fails here until it is
classified; derived and refused keys, and keys that contradict the recipe, are refused when the recipe loads."""

from __future__ import annotations

import pytest

from smoldist.config import load_recipe
from smoldist.config.sft_fields import installed_sft_fields
from smoldist.config.sft_keys import DERIVED, HONOURED, REFUSED, render, unclassified
from smoldist.errors import RecipeError
from tests.helpers import REPO


def test_every_installed_sftconfig_key_is_classified_once():
    installed = installed_sft_fields()  # imports trl: the pinned SFTConfig itself
    # on failure: place each key in HONOURED, DERIVED or REFUSED (smoldist/config/sft_keys.py), regenerate the page
    assert unclassified(installed) == []
    assert unclassified([*installed, "a_key_of_a_newer_trl"]) == ["a_key_of_a_newer_trl"]
    assert sorted([*HONOURED, *DERIVED, *REFUSED]) == sorted(installed)  # each exactly once, nothing stale


def test_the_page_is_the_table():
    page = (REPO / "docs" / "sft-keys.md").read_text()
    assert page == render(), "regenerate: python -m smoldist.config.sft_keys > docs/sft-keys.md"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.bf16=true", "train.bf16: true contradicts model.dtype float32"),  # before: trained under bf16
        ("train.fp16=true", "train.fp16: true contradicts model.dtype float32"),
        ("train.eval_packing=false", "train.eval_packing: not taken by smoldist; use data.packing"),
        ("train.dataset_num_proc=4", "train.dataset_num_proc: not taken by smoldist; use data.num_proc"),
        (
            "train.chat_template_path=x.jinja",
            "train.chat_template_path: not taken by smoldist; use model.chat_template",
        ),
        ("train.pad_token=<pad>", "train.pad_token: not taken by smoldist"),
        ("train.deepspeed=ds.json", "train.deepspeed: not taken by smoldist; use --accelerate-config zero2"),
        ("train.report_to=clearml", "train.report_to: 'clearml' is not installed (pip install clearml)"),
        ("train.report_to=wandb,nonsense", "train.report_to: 'nonsense' is not one of none, all, wandb"),
        ("train.gradient_accumulation_steps=2", "set by smoldist from train.global_batch_tokens"),
    ],
)
def test_keys_that_do_nothing_or_contradict_are_refused_when_the_recipe_loads(tiny_recipe, override, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(tiny_recipe, [override])


def test_precision_keys_that_agree_with_model_dtype_are_accepted(tiny_recipe):
    assert load_recipe(tiny_recipe, ["train.bf16=false"]).train["bf16"] is False  # float32: no autocast
    r = load_recipe(tiny_recipe, ["model.dtype=bfloat16", "train.bf16=true"])
    assert r.train["bf16"] is True
    with pytest.raises(RecipeError, match=r"train.bf16: false contradicts model.dtype bfloat16"):
        load_recipe(tiny_recipe, ["model.dtype=bfloat16", "train.bf16=false"])


def test_an_eos_token_other_than_the_templates_end_of_turn_is_refused_before_the_store(tiny_recipe, tmp_path):
    from smoldist.train.run import run

    with pytest.raises(
        RecipeError, match=r"train.eos_token: '<\|endoftext\|>' contradicts the chat template.*<\|im_end\|>"
    ):
        run(load_recipe(tiny_recipe, ["train.eos_token=<|endoftext|>"]))
    built = [p for p in (tmp_path / "store").glob("*") if not p.name.startswith(".")]  # .cache: source hashes
    assert built == []
