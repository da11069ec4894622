"""Your own task: prompts with gold completions, asked through the chat template, scored by exact match or as JSON.

    smoldist eval RUN --data test.jsonl --format prompt_completion                 # exact match
    smoldist eval RUN --data test.jsonl --format prompt_completion --metric json   # parses? equal as objects?
    smoldist eval RUN --data test.jsonl --format prompt_completion --metric json --compare   # against the base

Records are read through the `prompt_completion` converter `prepare` uses (a completion that is a JSON object is
written with json.dumps, as `serialize: json` trains it). Each prompt is one user turn through the run's saved
template, so the system prompt it trained with comes along; greedy, stopping at the end of the turn (generate.py).
`exact`: the completion, stripped, equals the gold one. `json`: the fraction of completions that parse as JSON and
the fraction equal to the gold one as objects (key order and spacing aside); a record is correct when equal.
"""

from __future__ import annotations

import json
from collections import Counter

from smoldist.config import SourceConfig
from smoldist.data.records import converted
from smoldist.data.sources import resolve_source
from smoldist.errors import DataError, RecipeError
from smoldist.eval.generate import generate
from smoldist.eval.results import write_json
from smoldist.model.lora import check_model_path, load_model, load_tokenizer_of

METRICS = ("exact", "json")
UNPARSED = object()


def read_prompt_completion(path: str, n: int | None = None, split: str = "test") -> tuple[list[dict], Counter]:
    """[{prompt, gold, where}] through the prompt_completion converter; records it cannot read are counted."""
    source = resolve_source(
        SourceConfig(path=path, format="prompt_completion", split=split, serialize="json"), "--data"
    )
    items, skipped = [], Counter()
    for where, doc in converted(source, source.spec, skipped):
        items.append({"prompt": doc.messages[-2]["content"], "gold": doc.messages[-1]["content"], "where": where})
        if n is not None and len(items) >= n:
            break
    if not items:
        raise DataError(f"--data {path}: no record with a prompt and a completion (skipped: {dict(skipped)})")
    return items, skipped


def parsed(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return UNPARSED


def score(completion: str, gold: str, metric: str) -> dict:
    """One record's verdict: exact text match, and under `json` whether it parses and equals the gold object."""
    out = {"exact": completion.strip() == gold.strip()}
    if metric == "json":
        got, want = parsed(completion.strip()), parsed(gold.strip())
        out["parses"] = got is not UNPARSED
        out["equal"] = out["parses"] and want is not UNPARSED and got == want
    out["correct"] = out["equal"] if metric == "json" else out["exact"]
    return out


def eval_task(
    model_path: str,
    data: str,
    metric: str = "exact",
    n: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    out: str | None = None,
    progress: bool = True,
    model=None,
    split: str = "test",
) -> dict:
    """Generations of `model_path` (or `model`'s weights through its template) scored against the completions."""
    import torch

    if metric not in METRICS:
        raise RecipeError(f"--metric: '{metric}' is not one of {', '.join(METRICS)}")
    check_model_path(model_path)
    items, skipped = read_prompt_completion(data, n, split)
    tok = load_tokenizer_of(model_path)
    if not tok.chat_template:
        raise RecipeError(f"{model_path}: its tokenizer has no chat template; eval asks prompts as chat turns")
    model = (model if model is not None else load_model(model_path, torch.float32)).eval()
    if torch.cuda.is_available():
        model = model.to("cuda", torch.bfloat16)
    completions = generate(model, tok, [it["prompt"] for it in items], batch_size, max_new_tokens, progress)
    records = [
        {"prompt": it["prompt"], "completion": c, "gold": it["gold"], **score(c, it["gold"], metric)}
        for it, c in zip(items, completions)
    ]
    fraction = lambda key: sum(r[key] for r in records) / len(records)  # noqa: E731
    result = {
        "metric": metric,
        "accuracy": fraction("correct"),
        "exact_match": fraction("exact"),
        "n": len(records),
        "correct": sum(r["correct"] for r in records),
        "model": str(model_path),
        "data": str(data),
        "format": "prompt_completion",
        "max_new_tokens": max_new_tokens,
        "skipped": dict(skipped),
        "records": records,
    }
    if metric == "json":
        result.update(json_parses=fraction("parses"), json_equal=fraction("equal"))
    write_json(out, result)
    return result


def summary_line(result: dict) -> str:
    n = result["n"]
    line = f"exact match {result['exact_match']:.1%} ({sum(r['exact'] for r in result['records'])}/{n})"
    if result["metric"] == "json":
        line = (
            f"JSON parses {result['json_parses']:.1%}, equal as objects {result['json_equal']:.1%} "
            f"({result['correct']}/{n}); {line}"
        )
    return line + (f"; skipped records: {result['skipped']}" if result["skipped"] else "")
