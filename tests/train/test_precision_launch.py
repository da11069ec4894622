"""A recipe's `model.dtype` decides autocast, whatever the accelerate config's `mixed_precision` says: smoldist's
launcher passes the recipe's precision, and a rank launched otherwise refuses a mismatch before any work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from smoldist.config import load_recipe
from smoldist.errors import RecipeError
from smoldist.train.arguments import sft_config
from tests.helpers import REPO, losses, one_row_recipe


def test_a_float32_recipe_under_a_bf16_launch_is_refused_naming_both(tmp_path, conversations_file, monkeypatch):
    recipe = load_recipe(one_row_recipe(tmp_path, conversations_file, max_steps=1, save_steps=100))
    assert recipe.model.dtype == "float32"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch` sets from a bf16 config
    with pytest.raises(RecipeError, match=r"model.dtype: float32 .* mixed_precision: bf16"):
        sft_config(recipe, 1, [])
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert sft_config(recipe, 1, []).mixed_precision == "no"


@pytest.mark.slow
def test_a_float32_recipe_launched_with_a_bf16_config_trains_in_float32(tmp_path, conversations_file):
    recipe = one_row_recipe(tmp_path, conversations_file, max_steps=2, save_steps=100)
    config = tmp_path / "cpu_bf16.yaml"  # one CPU process whose config asks for bf16 autocast
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nuse_cpu: true\n"
        "num_machines: 1\nnum_processes: 1\nmixed_precision: bf16\n"
    )
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    runs = {}
    for name, extra in [("plain", []), ("launched", ["--accelerate-config", str(config)])]:
        out = tmp_path / name
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "smoldist",
                "train",
                str(recipe),
                f"train.output_dir={out}",
                "train.logging_steps=1",
                *extra,
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=600,
        )
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        runs[name] = losses(out)
    assert runs["launched"] == runs["plain"]  # bf16 autocast would change the losses in their 3rd digit
