"""The real recipes in launch/ load and resolve (they need the hub to run, so only parsing is tested here)."""

from __future__ import annotations

import pytest

from smoldist.config import load_recipe
from smoldist.data.templates import recipe_template
from smoldist.train.arguments import gradient_accumulation
from tests.helpers import REPO

RECIPES = sorted((REPO / "launch").glob("*/*.yaml"))


def test_the_four_recipes_exist():
    names = {f"{p.parent.name}/{p.name}" for p in RECIPES}
    assert {
        "smollm2-135m/smoltalk.yaml",
        "smollm2-135m/gsm8k.yaml",
        "smollm2-135m/the-stack-smol.yaml",
        "smollm2-1.7b/smoltalk.yaml",
    } <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_resolves(path):
    r = load_recipe(path)
    assert r.model.name_or_path.startswith(("HuggingFaceTB/SmolLM2-", "google/gemma-3-", "runs/smollm2-"))
    assert r.method == ("dpo" if "dpo" in path.name else "sft")
    if r.model.chat_template != "tokenizer":  # the model's own template lives on the hub
        recipe_template(r.model, r.data)  # template exists
    rows = r.train["per_device_train_batch_size"]
    for world in (1, 2, 4, 8):  # 1 GPU up to 8 GPUs take the same global batch
        gas = gradient_accumulation(r.train["global_batch_tokens"], rows, r.data.seq_len, world)
        assert gas * rows * r.data.seq_len * world == r.train["global_batch_tokens"]
