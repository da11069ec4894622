"""gsm8k exact match: questions asked through the model's chat template, answers read from `#### N`.

    smoldist eval MODEL_OR_RUN --data gsm8k_test.jsonl --format gsm8k -n 100 --batch-size 16 --out eval.json
    smoldist eval MODEL_OR_RUN --data openai/gsm8k [--data-config socratic]   # the hub's test split; config main

Each question goes through the model's chat template as one user turn; greedy decoding in left-padded
batches stops at the end of the assistant turn (eval/generate.py). The answer is the number after the
completion's `#### ` (commas, a leading $ and trailing periods dropped; 18.00 = 18); if there is none, the
last number in the completion, counted separately. Exact match with the gold `#### N`.
"""

from __future__ import annotations

import re
from collections import Counter

from smoldist.config import SourceConfig
from smoldist.data.records import converted
from smoldist.data.sources import resolve_source
from smoldist.errors import DataError, RecipeError
from smoldist.eval.generate import generate
from smoldist.eval.results import write_json
from smoldist.model.lora import check_model_path, load_model, load_tokenizer_of

HASH_ANSWER = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
FORMATS = ("gsm8k",)
# openai/gsm8k has two configs (main, socratic) and no default: load_dataset needs one; main is what recipes train on
HUB_CONFIGS = {"openai/gsm8k": "main", "gsm8k": "main"}


def normalise(number: str) -> str:
    """'1,234.' -> '1234'; '18.00' -> '18'; '-3.50' -> '-3.5'."""
    s = number.replace(",", "").replace("$", "").strip().rstrip(".")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def extract_answer(text: str) -> tuple[str | None, str]:
    """(answer, how): how is '####' (the gsm8k answer line), 'last number' (the fallback) or 'none'."""
    m = HASH_ANSWER.search(text)
    if m:
        return normalise(m.group(1)), "####"
    numbers = NUMBER.findall(text)
    if numbers:
        return normalise(numbers[-1]), "last number"
    return None, "none"


def read_gsm8k(
    path: str, n: int | None = None, split: str = "test", config: str | None = None
) -> tuple[list[dict], Counter]:
    """[{question, gold}] from a gsm8k file (jsonl/json/parquet), through the gsm8k converter; skipped records
    counted. `split` picks the split of a hub or saved dataset (openai/gsm8k: train or test), `config` the config
    of a hub dataset (a recipe source's `name`; openai/gsm8k: main unless named)."""
    source = resolve_source(SourceConfig(path=path, format="gsm8k", split=split), "--data")
    if source.kind != "hub" and config is not None:
        what = "a saved dataset" if source.kind == "saved" else "a local file"
        raise DataError(f"--data-config {config}: a hub dataset's config; --data {path} is {what}")
    spec = source.spec
    if source.kind == "hub":
        spec.name = config or HUB_CONFIGS.get(path)
    items, skipped = [], Counter()
    for where, doc in converted(source, spec, skipped):
        gold, how = extract_answer(doc.messages[-1]["content"])
        if how != "####":
            skipped["no_gold_answer"] += 1  # a gsm8k answer without its '#### N' line cannot be scored
            continue
        items.append({"question": doc.messages[-2]["content"], "gold": gold, "where": where})
        if n is not None and len(items) >= n:
            break
    if not items:
        raise DataError(
            f"--data {path}: no gsm8k record with a question and a '#### N' answer (skipped: {dict(skipped)})"
        )
    return items, skipped


def eval_gsm8k(
    model_path: str,
    data: str,
    n: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    out: str | None = None,
    progress: bool = True,
    should_stop=None,
    model=None,
    split: str = "test",
    config: str | None = None,
) -> dict:
    """gsm8k exact match of `model_path` (or of `model`'s weights asked through `model_path`'s tokenizer and
    template)."""
    import torch

    check_model_path(model_path)
    items, skipped = read_gsm8k(data, n, split, config)
    tok = load_tokenizer_of(model_path)
    if not tok.chat_template:
        raise RecipeError(f"{model_path}: its tokenizer has no chat template; eval asks questions as chat turns")
    model = (model if model is not None else load_model(model_path, torch.float32)).eval()
    if torch.cuda.is_available():
        model = model.to("cuda", torch.bfloat16)
    completions = generate(
        model, tok, [it["question"] for it in items], batch_size, max_new_tokens, progress, should_stop
    )
    asked, items = len(items), items[: len(completions)]
    records, how_counts = [], Counter()
    for it, completion in zip(items, completions):
        extracted, how = extract_answer(completion)
        how_counts[how] += 1
        records.append(
            {
                "question": it["question"],
                "completion": completion,
                "extracted": extracted,
                "gold": it["gold"],
                "correct": extracted is not None and extracted == it["gold"],
                "extracted_by": how,
            }
        )
    correct = sum(r["correct"] for r in records)
    result = {
        "accuracy": correct / len(records) if records else None,
        "n": len(records),
        "correct": correct,
        "stopped": len(records) < asked,
        "asked": asked,
        "model": str(model_path),
        "data": str(data),
        "format": "gsm8k",
        "max_new_tokens": max_new_tokens,
        "extracted_by": dict(how_counts),
        "skipped": dict(skipped),
        "records": records,
    }
    write_json(out, result)
    return result
