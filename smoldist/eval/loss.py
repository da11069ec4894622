"""`smoldist eval RUN --loss`: the loss per label token over the eval split of the store the run trained on.

    smoldist eval runs/demo --loss --batch-size 8

The run's recipe.yaml names the store; it is verified like a training start. Rows are batched as training
batches them (TRL's padding-free collator: one flat row, position ids restarting at every document), as many
per batch as the run's evaluation took (`per_device_eval_batch_size`, else one row with sdpa/eager, whose mask is
(rows x seq_len)^2), and the model runs with the recipe's attention, without a KV cache, under the recipe's
autocast on a GPU (fp32 on CPU), over fp32 weights, as the trainer runs it. The full-vocabulary logits are never
built: the LM head and the cross-entropy run over chunks of label tokens (`chunked_loss_sum`). The figure is the
summed cross-entropy over every label token divided by their number: the same at any batch size, as the
trainer's eval_loss (train/eval_weighting.py).
"""

from __future__ import annotations

from pathlib import Path

from smoldist.config import load_recipe
from smoldist.errors import DataError, RecipeError
from smoldist.eval.results import write_json
from smoldist.model.attention import run_eval_rows
from smoldist.model.lora import check_model_path, load_model, load_tokenizer_of
from smoldist.model.precision import mixed_precision
from smoldist.store.manifest import load_split, verify_store
from smoldist.store.plan import plan_store

CHUNK_ELEMENTS = 1 << 26  # logits held at once (256 MiB in fp32), whatever the vocabulary and the batch


def eval_loss(run_dir: str, batch_size: int | None = None, out: str | None = None, model=None) -> dict:
    """Mean loss per label token on the eval split of the store the run trained on, of the run's model or of
    `model` (the same rows, token for token). `batch_size` None: the run's own eval batch."""
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
    use_attention(model, recipe.model.attn_implementation)
    on_gpu = torch.cuda.is_available()
    autocast = mixed_precision(recipe.model.dtype, recipe.model.master_weights, recipe.train, on_gpu)
    rows = batch_size or run_eval_rows(model.config._attn_implementation, recipe.train)
    if recipe.method == "dpo":  # preference pairs: TRL's DPO loss against the run's reference log-probs
        from smoldist.eval.dpo_loss import dpo_eval

        result = dpo_eval(run_dir, recipe.dpo, model, eval_ds, rows, tok.pad_token_id, autocast if on_gpu else "no")
    else:
        loss, tokens = token_mean_loss(model, eval_ds, rows, tok.pad_token_id, autocast if on_gpu else "no")
        result = {"eval_loss": loss, "tokens": tokens}
    result.update(rows=len(eval_ds), store=str(plan.path), model=str(run_dir))
    write_json(out, result)
    return result


def use_attention(model, attn_implementation: str) -> None:
    """Run `model` with the recipe's attention (a loaded model gets transformers' default, sdpa); `auto` resolved as
    training resolved it."""
    import torch

    from smoldist.model.attention import check_attn_implementation, register
    from smoldist.model.attention_choice import choose

    check_attn_implementation(attn_implementation, training=False)
    register()
    dtype = "bfloat16" if model.dtype == torch.bfloat16 else "float32"
    model.set_attn_implementation(choose(attn_implementation, model.config, model.device.type, dtype).name)


def unwrapped(model):
    """The transformers model under a LoRA run's peft.PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head_logits(model, hidden):
    """The logits the model's own forward gives for these decoder hidden states: its LM head, then the transform its
    forward applies to them, if any (Gemma 2's soft-capping, Cohere's `logit_scale`, Granite's `logits_scaling`; TRL's
    add_fused_lm_head knows a few rarer ones, and `check_head` refuses a model whose logits these do not reproduce)."""
    import torch

    cfg = model.config.get_text_config()
    logits = model.get_output_embeddings()(hidden).float()
    if getattr(cfg, "logit_scale", None):
        logits = logits * cfg.logit_scale
    if getattr(cfg, "logits_scaling", None):
        logits = logits / cfg.logits_scaling
    if getattr(cfg, "final_logit_softcapping", None):
        logits = torch.tanh(logits / cfg.final_logit_softcapping) * cfg.final_logit_softcapping
    return logits


def check_head(model, batch: dict, probe_tokens: int = 16) -> None:
    """Refuse a model whose forward does to the logits what `head_logits` does not (a wrong figure otherwise):
    its own logits and ours, on the batch's first tokens."""
    import torch

    base = unwrapped(model)
    probe = {k: batch[k][..., :probe_tokens] for k in ("input_ids", "position_ids") if k in batch}
    theirs = model(**probe, use_cache=False).logits.float()
    ours = head_logits(base, base.get_decoder()(**probe, use_cache=False).last_hidden_state)
    scale = max(1.0, float(theirs.abs().max()))
    if not torch.allclose(ours, theirs, rtol=2e-2, atol=2e-2 * scale):
        raise RecipeError(
            f"eval --loss: {type(base).__name__}'s forward changes its LM head's logits in a way smoldist does not "
            f"reproduce (max difference {float((ours - theirs).abs().max()):.3g}); its loss is not scored, rather "
            "than scored wrong"
        )


def chunked_loss_sum(model, batch: dict, chunk_tokens: int | None = None) -> tuple[float, int]:
    """(summed cross-entropy over the batch's label tokens, their number) without the full logits: the decoder's
    hidden states, then the LM head (`head_logits`) + cross-entropy over `chunk_tokens` label tokens at a time."""
    import torch.nn.functional as F

    base = unwrapped(model)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "seq_lengths")}
    hidden = base.get_decoder()(**inputs, use_cache=False).last_hidden_state
    labels = batch["labels"][..., 1:].reshape(-1)  # the label of position i+1 scores the logits at i
    hidden = hidden[..., :-1, :].reshape(labels.numel(), -1)
    keep = labels != -100
    hidden, labels = hidden[keep], labels[keep]
    chunk = chunk_tokens or max(1, CHUNK_ELEMENTS // base.get_output_embeddings().weight.shape[0])
    total = 0.0
    for i in range(0, labels.numel(), chunk):
        logits = head_logits(base, hidden[i : i + chunk])
        total += float(F.cross_entropy(logits, labels[i : i + chunk], reduction="sum"))
    return total, int(labels.numel())


def token_mean_loss(
    model, rows, batch_size: int, pad_token_id: int | None = None, autocast: str = "no"
) -> tuple[float, int]:
    """(summed cross-entropy over every label token of `rows` / their number, that number), in row order;
    `autocast` 'bf16'/'fp16' runs the forward under that autocast, as the trainer does."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(pad_token_id=pad_token_id or 0, padding_free=True)  # as training batches
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast)
    total, count = 0.0, 0
    loader = DataLoader(rows, batch_size=batch_size, shuffle=False, collate_fn=collate)
    for batch in tqdm(loader, desc="eval loss", unit=" batch", dynamic_ncols=True):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            # no KV cache, as the trainer runs it: with the cache on, packed documents would attend to each other
            if count == 0:
                check_head(model, batch)
            loss_sum, n = chunked_loss_sum(model, batch)
        total, count = total + loss_sum, count + n
    return total / count, count
