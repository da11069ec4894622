"""`smoldist eval RUN --compare [BASE]`: did fine-tuning make the model better? The run and the model it started
from are scored on the same questions (or the same held-out rows), and a verdict is printed.

The base is asked through the run's tokenizer and chat template, so the prompts are the same token for token and
only the weights differ. By default the base is what the run started from: the adapter's base for a LoRA run, else
the recipe's `model` (a hub name or directory, or `model.init` rebuilt from its seed). gsm8k answers are paired per
question: the verdict counts the questions only one model got right and tests them with an exact two-sided sign test
(McNemar's), so a handful of questions is not called an improvement.
"""

from __future__ import annotations

import math
from pathlib import Path

from smoldist.config import load_recipe
from smoldist.errors import RecipeError
from smoldist.eval.gsm8k import eval_gsm8k
from smoldist.eval.loss import eval_loss
from smoldist.eval.task import eval_task
from smoldist.model.build import build_model, load_tokenizer
from smoldist.model.lora import base_of, check_model_path, is_adapter_dir, load_model

SIGNIFICANCE = 0.05  # two-sided, on the questions the two models disagree about


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided p-value that wins and losses are equally likely (binomial, p = 1/2)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def find_base(run_dir: str, base: str | None = None):
    """(a loader of the model the run started from, in fp32, its name): BASE if given, else the run's recipe rebuilt
    (a LoRA run's too: its adapter is zero at step 0), else the adapter's base. Found before anything is scored, so a
    run without a known base fails at once."""
    check_model_path(run_dir)
    recipe_path = Path(run_dir) / "recipe.yaml"
    if base is None and is_adapter_dir(run_dir) and not recipe_path.is_file():
        base = base_of(run_dir)  # the recipe, when there, also rebuilds tokens training added (a LoRA run's too)
    if base is not None:
        return lambda: _load(base), base
    if not recipe_path.is_file():
        raise RecipeError(
            f"--compare: {run_dir} has no recipe.yaml naming the model it started from; give it: --compare BASE_MODEL"
        )
    cfg = load_recipe(recipe_path).model
    return lambda: _build(cfg), cfg.name_or_path or f"model.init (seed {cfg.seed})"


def _load(base: str):
    import torch

    try:
        return load_model(base, torch.float32)
    except OSError as e:
        raise RecipeError(f"--compare: cannot load the base model '{base}': {e}") from None


def _build(cfg):
    """The recipe's model as training built it: a `model.init` from its seed, or the pretrained weights with any
    tokens training added (ChatML on a base vocabulary) added the same way, new rows initialised as at step 0."""
    return build_model(cfg, load_tokenizer(cfg), training=False).float()


def score_gsm8k(
    run_dir: str,
    base: str | None,
    data: str,
    n: int | None,
    batch_size: int,
    max_new_tokens: int,
    compare: bool = True,
    should_stop=None,
    out: str | None = None,
    split: str = "test",
    config: str | None = None,
) -> list[dict]:
    """[the run's gsm8k result] and, with `compare` unless the run's was stopped, its base's on the same questions
    asked through the run's template. The base is found first: a run without a known base fails before any scoring."""
    base_loader = find_base(run_dir, base) if compare else None
    scored = [
        eval_gsm8k(
            run_dir, data, n, batch_size, max_new_tokens, out, should_stop=should_stop, split=split, config=config
        )
    ]
    if base_loader is not None and not scored[0]["stopped"]:
        load_base, name = base_loader
        scored.append(
            dict(
                eval_gsm8k(
                    run_dir,
                    data,
                    n,
                    batch_size,
                    max_new_tokens,
                    should_stop=should_stop,
                    model=load_base(),
                    split=split,
                    config=config,
                ),
                model=name,
            )
        )
    return scored


def compare_gsm8k(
    run_dir: str,
    base: str | None,
    data: str,
    n: int | None,
    batch_size: int,
    max_new_tokens: int,
    split: str = "test",
    config: str | None = None,
) -> dict:
    return paired(*score_gsm8k(run_dir, base, data, n, batch_size, max_new_tokens, split=split, config=config))


def compare_task(
    run_dir: str, base: str | None, data: str, metric: str, n: int | None, batch_size: int, max_new_tokens: int
) -> dict:
    """Your own task (eval/task.py), the run against its base asked through the run's template: the gsm8k sign test."""
    load_base, name = find_base(run_dir, base)
    tuned = eval_task(run_dir, data, metric, n, batch_size, max_new_tokens)
    before = dict(eval_task(run_dir, data, metric, n, batch_size, max_new_tokens, model=load_base()), model=name)
    return paired(tuned, before, "JSON equal" if metric == "json" else "exact match")


def paired(tuned: dict, before: dict, metric: str = "gsm8k accuracy") -> dict:
    """The verdict on two results over the same questions: a sign test on the questions only one got right."""
    wins = sum(t["correct"] and not b["correct"] for t, b in zip(tuned["records"], before["records"]))
    losses = sum(b["correct"] and not t["correct"] for t, b in zip(tuned["records"], before["records"]))
    p = sign_test(wins, losses)
    delta = tuned["accuracy"] - before["accuracy"]
    verdict = ("better" if delta > 0 else "worse") if p < SIGNIFICANCE else "no clear difference"
    return {
        "verdict": verdict,
        "metric": metric,
        "delta": delta,
        "wins": wins,
        "losses": losses,
        "p_value": p,
        "n": tuned["n"],
        "run": tuned,
        "base": before,
    }


def compare_loss(run_dir: str, base: str | None, batch_size: int | None = None) -> dict:
    load_base, name = find_base(run_dir, base)
    tuned = eval_loss(run_dir, batch_size)
    before = dict(eval_loss(run_dir, batch_size, model=load_base()), model=name)
    delta = tuned["eval_loss"] - before["eval_loss"]
    verdict = "better" if delta < 0 else "worse" if delta > 0 else "no clear difference"
    return {"verdict": verdict, "metric": "eval loss", "delta": delta, "run": tuned, "base": before}


def summary(result: dict) -> str:
    """One line: the verdict, both scores and the evidence."""
    run, base = result["run"], result["base"]
    if result["metric"] == "eval loss":
        return (
            f"{result['verdict']}: eval loss {run['eval_loss']:.4f} vs {base['eval_loss']:.4f} before "
            f"({result['delta']:+.4f}; perplexity {math.exp(run['eval_loss']):,.2f} "
            f"vs {math.exp(base['eval_loss']):,.2f}) "
            f"over {run['rows']} held-out rows; base {base['model']}"
        )
    return (
        f"{result['verdict']}: {result['metric']} {run['accuracy']:.1%} vs {base['accuracy']:.1%} before "
        f"({100 * result['delta']:+.1f} points) on {result['n']} questions; right only after {result['wins']}, "
        f"only before {result['losses']}, sign test p = {result['p_value']:.3g}; base {base['model']}"
    )
