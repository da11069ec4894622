"""`smoldist merge RUN [OUT]`: fold a LoRA run's adapter into its base and save a full model.

    smoldist merge runs/lora                 # writes runs/lora-merged
    smoldist merge runs/lora /models/mine    # or where you say

The merged directory is self-contained: weights (in the recipe's model.dtype), config, the run's
tokenizer and chat template, and the run's generation_config.json when it has one (its stop token).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from smoldist.errors import RecipeError
from smoldist.model.lora import ADAPTER_CONFIG, is_adapter_dir, load_model
from smoldist.model.stop_tokens import set_stop_tokens

COPIED = ("generation_config.json",)  # files of the run that override what the base model would write


def recipe_dtype(run_dir: Path) -> str:
    """model.dtype of the run's saved recipe (float32 when the run has no recipe.yaml)."""
    import yaml

    path = run_dir / "recipe.yaml"
    if not path.is_file():
        return "float32"
    return (yaml.safe_load(path.read_text()).get("model") or {}).get("dtype") or "float32"


def merge(run_dir: str | Path, out_dir: str | Path | None = None, dtype: str | None = None) -> Path:
    import torch
    from transformers import AutoTokenizer

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecipeError(f"{run_dir}: no such directory; give the run directory of a LoRA run (its train.output_dir)")
    if not is_adapter_dir(run_dir):
        raise RecipeError(f"{run_dir}: no {ADAPTER_CONFIG}; not a LoRA run (a full fine-tune is already a whole model)")
    out = Path(out_dir) if out_dir else run_dir.with_name(run_dir.name + "-merged")
    model = load_model(run_dir, torch.float32)  # merge in fp32, then cast once
    merged = model.merge_and_unload()
    merged = merged.to(getattr(torch, dtype or recipe_dtype(run_dir)))
    tok = AutoTokenizer.from_pretrained(str(run_dir))
    if tok.chat_template:  # the base's config.json still names the base eos: stop where the run's turns end
        set_stop_tokens(tok, merged, tok.chat_template)
    merged.save_pretrained(out)
    tok.save_pretrained(out)
    for name in COPIED:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out / name)
    return out
