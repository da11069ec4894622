"""`smoldist eval RUN --loss`: the loss per label token over the eval split of the store the run trained on.

    smoldist eval runs/demo --loss --batch-size 8

The run's recipe.yaml names the store; it is verified like a training start. Rows are batched as training
batches them (TRL's padding-free collator: one flat row, position ids restarting at every document) and
the model runs in fp32 without a KV cache, as the trainer runs it. The figure is the summed cross-entropy
over every label token divided by their number: the same at any batch size, unlike the Trainer's
eval_loss, a mean of batch means that weighs a short batch's tokens more.
"""

from __future__ import annotations

from pathlib import Path

from smoldist.config import load_recipe
from smoldist.errors import DataError, RecipeError
from smoldist.eval.results import write_json
from smoldist.model.lora import check_model_path, load_model, load_tokenizer_of
from smoldist.store.manifest import load_split, verify_store
from smoldist.store.plan import plan_store


def eval_loss(run_dir: str, batch_size: int = 8, out: str | None = None, model=None) -> dict:
    """Mean loss per label token on the eval split of the store the run trained on, of the run's model or of
    `model` (the same rows, token for token)."""
    import torch

    recipe_path = Path(run_dir) / "recipe.yaml"
    check_model_path(run_dir)
    if not recipe_path.is_file():
        raise RecipeError(f"{run_dir}: no recipe.yaml; --loss needs a run directory written by `smoldist train`")
    recipe = load_recipe(recipe_path)
    plan = plan_store(recipe.model, recipe.data)
    if not plan.path.exists():
        raise DataError(
            f"{run_dir}/recipe.yaml: its store {plan.path} is missing; run `smoldist prepare {recipe_path}`"
        )
    verify_store(plan.path, plan.key)
    eval_ds = load_split(plan.path, "eval")
    if eval_ds is None:
        raise DataError(f"{plan.path}: no eval split (the run's data.eval_fraction is 0); nothing held out to score")
    tok = load_tokenizer_of(run_dir)
    model = model if model is not None else load_model(run_dir, torch.float32)
    loss, tokens = token_mean_loss(model, eval_ds, batch_size, tok.pad_token_id)
    result = {"eval_loss": loss, "tokens": tokens, "rows": len(eval_ds), "store": str(plan.path), "model": str(run_dir)}
    write_json(out, result)
    return result


def token_mean_loss(model, rows, batch_size: int, pad_token_id: int | None = None) -> tuple[float, int]:
    """(summed cross-entropy over every label token of `rows` / their number, that number), in row order."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(pad_token_id=pad_token_id or 0, padding_free=True)  # as training batches
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    total, count = 0.0, 0
    loader = DataLoader(rows, batch_size=batch_size, shuffle=False, collate_fn=collate)
    for batch in tqdm(loader, desc="eval loss", unit=" batch", dynamic_ncols=True):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        n = int((batch["labels"][..., 1:] != -100).sum())  # the tokens the causal-LM loss scores (labels shift by one)
        with torch.no_grad():
            # no KV cache, as the trainer runs it: with the cache on, packed documents would attend to each other
            loss = model(**batch, use_cache=False, num_items_in_batch=n).loss  # summed over the batch, divided by n
        total, count = total + float(loss) * n, count + n
    return total / count, count
