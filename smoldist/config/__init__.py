"""The recipe: what to train (model), on what (data), how (train: trl.SFTConfig keys) and what to report (tracking).

    from smoldist.config import load_recipe
    recipe = load_recipe("launch/smollm2-135m/gsm8k.yaml", ["data.seq_len=4096"])

`recipe.py` holds the sections as typed dataclasses, `load.py` reads YAML and overrides into them,
`paths.py` reads a recipe's relative input paths from its folder, `batch.py` is the one rule for splitting the
global batch over processes (train and submit), `sft_fields.py` is SFTConfig's field table (the `train` section
is checked without importing trl), `sft_keys.py` says which of those keys smoldist honours, derives or refuses,
`habits.py` maps TRL flags and flat TRL/axolotl keys to the recipe keys that do the same, `dpo.py` the training
method (`method: sft | dpo`) and the `dpo` section.
Every stage receives only its own section.
"""

from smoldist.config.load import closest, load_recipe, save_recipe
from smoldist.config.recipe import (
    DataConfig,
    EndEvalConfig,
    LoraConfig,
    ModelConfig,
    Recipe,
    SourceConfig,
    TrackingConfig,
    WandbConfig,
    resolve_path,
)

__all__ = [
    "DataConfig",
    "EndEvalConfig",
    "LoraConfig",
    "ModelConfig",
    "Recipe",
    "SourceConfig",
    "TrackingConfig",
    "WandbConfig",
    "closest",
    "load_recipe",
    "resolve_path",
    "save_recipe",
]
