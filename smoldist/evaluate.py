"""`smoldist eval`: score a model or a run (full or LoRA) by what it answers, or by its held-out loss.

    smoldist eval MODEL_OR_RUN --data gsm8k_test.jsonl --format gsm8k -n 100 --batch-size 16 --out eval.json
    smoldist eval RUN --loss                    # loss on the eval split of the store the run trained on

gsm8k: each question goes through the model's chat template as one user turn; greedy decoding in
left-padded batches stops at the end of the assistant turn (`<|im_end|>`) or eos. The answer is the
number after the completion's `#### ` (commas, a leading $ and trailing periods dropped; 18.00 = 18); if
there is none, the last number in the completion, counted separately. Exact match with the gold `#### N`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from smoldist.errors import DataError, RecipeError

HASH_ANSWER = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
FORMATS = ("gsm8k",)


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


def read_gsm8k(path: str, n: int | None = None) -> tuple[list[dict], Counter]:
    """[{question, gold}] from a gsm8k file (jsonl/json/parquet), through the gsm8k converter; skipped records counted."""
    from smoldist.config import SourceConfig
    from smoldist.converters import CONVERTERS, InvalidRecord
    from smoldist.sources import Unreadable, iter_records, resolve_source

    spec = SourceConfig(path=path, format="gsm8k")
    items, skipped = [], Counter()
    for where, record in iter_records(resolve_source(spec, "--data"), "--data"):
        if n is not None and len(items) >= n:
            break
        if isinstance(record, Unreadable):
            skipped[record.reason] += 1
            continue
        try:
            doc = CONVERTERS["gsm8k"](record, spec, "assistant")
        except InvalidRecord as e:
            skipped[e.reason] += 1
            continue
        gold, how = extract_answer(doc.messages[-1]["content"])
        if how != "####":
            skipped["no_gold_answer"] += 1  # a gsm8k answer without its '#### N' line cannot be scored
            continue
        items.append({"question": doc.messages[-2]["content"], "gold": gold, "where": where})
    if not items:
        raise DataError(f"--data {path}: no gsm8k record with a question and a '#### N' answer (skipped: {dict(skipped)})")
    return items, skipped


def generate(model, tok, questions: list[str], batch_size: int, max_new_tokens: int, progress: bool = True,
             should_stop=None) -> list[str]:
    """Greedy completions, batched with left padding, each stopping at the end of its turn; fewer than asked
    when `should_stop()` (asked before each batch) says so."""
    import torch
    from tqdm import tqdm

    from smoldist.chat import stop_token_ids

    tok.padding_side = "left"  # generation appends on the right: every row's prompt must end at the same column
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    stops = stop_token_ids(tok)
    out: list[str] = []
    device = next(model.parameters()).device
    with tqdm(total=len(questions), desc="eval", unit=" q", disable=not progress, dynamic_ncols=True) as bar:
        for i in range(0, len(questions), batch_size):
            if should_stop is not None and should_stop():
                break
            chunk = questions[i:i + batch_size]
            texts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
                     for q in chunk]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                     pad_token_id=tok.pad_token_id)
            new = ids[:, enc["input_ids"].shape[1]:]
            out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
            bar.update(len(chunk))
    return out


def eval_gsm8k(model_path: str, data: str, n: int | None = None, batch_size: int = 8, max_new_tokens: int = 256,
               out: str | None = None, progress: bool = True, should_stop=None, model=None) -> dict:
    """gsm8k exact match of `model_path` (or of `model`'s weights asked through `model_path`'s tokenizer and template)."""
    import torch
    from transformers import AutoTokenizer

    from smoldist.lora import load_model

    items, skipped = read_gsm8k(data, n)
    tok = AutoTokenizer.from_pretrained(model_path)
    if not tok.chat_template:
        raise RecipeError(f"{model_path}: its tokenizer has no chat template; eval asks questions as chat turns")
    model = (model if model is not None else load_model(model_path, torch.float32)).eval()
    if torch.cuda.is_available():
        model = model.to("cuda", torch.bfloat16)
    completions = generate(model, tok, [it["question"] for it in items], batch_size, max_new_tokens, progress, should_stop)
    asked, items = len(items), items[:len(completions)]
    records, how_counts = [], Counter()
    for it, completion in zip(items, completions):
        extracted, how = extract_answer(completion)
        how_counts[how] += 1
        records.append({"question": it["question"], "completion": completion, "extracted": extracted, "gold": it["gold"],
                        "correct": extracted is not None and extracted == it["gold"], "extracted_by": how})
    correct = sum(r["correct"] for r in records)
    result = {"accuracy": correct / len(records) if records else None, "n": len(records), "correct": correct,
              "stopped": len(records) < asked, "asked": asked, "model": str(model_path),
              "data": str(data), "format": "gsm8k", "max_new_tokens": max_new_tokens, "extracted_by": dict(how_counts),
              "skipped": dict(skipped), "records": records}
    write_json(out, result)
    return result


def write_json(out: str | None, result: dict) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1, ensure_ascii=False))


def print_gsm8k(result: dict, show: int = 10, file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file, highlight=False)
    table = Table(title=f"gsm8k: {result['model']}", show_lines=False)
    for col in ("#", "gold", "extracted", "by", "ok"):
        table.add_column(col, no_wrap=True)
    table.add_column("question", no_wrap=True, overflow="ellipsis", max_width=max(20, console.width - 50))
    for i, r in enumerate(result["records"][:show]):
        table.add_row(str(i), r["gold"], str(r["extracted"]), r["extracted_by"].split()[0], "yes" if r["correct"] else "no",
                      r["question"])
    console.print(table)
    by = result["extracted_by"]
    console.print(f"accuracy {result['accuracy']:.1%} ({result['correct']}/{result['n']}); answers read from '####': "
                  f"{by.get('####', 0)}, last number (fallback): {by.get('last number', 0)}, none: {by.get('none', 0)}"
                  + (f"; skipped records: {result['skipped']}" if result["skipped"] else ""))


def eval_loss(run_dir: str, batch_size: int = 8, out: str | None = None, model=None) -> dict:
    """Mean loss per label token on the eval split of the store the run trained on (the run dir's recipe.yaml names
    it), of the run's model or of `model` (the same rows, token for token)."""
    import tempfile

    import torch
    from transformers import AutoTokenizer

    from smoldist.config import load_recipe
    from smoldist.lora import load_model
    from smoldist.prepare import plan_store
    from smoldist.store import load_split, verify_store
    from smoldist.train import sft_config
    from smoldist.trainer import SmoldistTrainer

    recipe_path = Path(run_dir) / "recipe.yaml"
    if not recipe_path.is_file():
        raise RecipeError(f"{run_dir}: no recipe.yaml; --loss needs a run directory written by `smoldist train`")
    recipe = load_recipe(recipe_path)
    plan = plan_store(recipe.model, recipe.data)
    if not plan.path.exists():
        raise DataError(f"{run_dir}/recipe.yaml: its store {plan.path} is missing; run `smoldist prepare {recipe_path}`")
    verify_store(plan.path, plan.key)
    eval_ds = load_split(plan.path, "eval")
    if eval_ds is None:
        raise DataError(f"{plan.path}: no eval split (the run's data.eval_fraction is 0); nothing held out to score")
    tok = AutoTokenizer.from_pretrained(run_dir)
    model = model if model is not None else load_model(run_dir, torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        recipe.train.update(output_dir=tmp, per_device_eval_batch_size=batch_size)
        trainer = SmoldistTrainer(model=model, args=sft_config(recipe, 1, []), train_dataset=eval_ds,  # required, unused
                                  eval_dataset=eval_ds, processing_class=tok)
        loss, tokens = token_mean_loss(trainer)
    result = {"eval_loss": loss, "tokens": tokens, "rows": len(eval_ds), "store": str(plan.path), "model": str(run_dir)}
    write_json(out, result)
    return result


def eval_at_end(cfg, output_dir: str, stop=None) -> dict:
    """`tracking.eval`: score the saved model (main process), write eval_gsm8k.json, log accuracy + samples to W&B;
    with `compare`, the model the run started from too (eval_compare.json), and the verdict.
    A stop signal (`stop`, a smoldist.preemption.StopFlag) ends it at the next batch: the model is already saved."""
    from smoldist.compare import find_base, paired, summary

    should_stop = _stop_check(stop)
    result = eval_gsm8k(output_dir, cfg.data, cfg.n, cfg.batch_size, cfg.max_new_tokens, str(Path(output_dir) / "eval_gsm8k.json"),
                        should_stop=should_stop)
    scored = [result]
    if cfg.compare and not result["stopped"]:
        load_base, name = find_base(output_dir)
        scored.append(dict(eval_gsm8k(output_dir, cfg.data, cfg.n, cfg.batch_size, cfg.max_new_tokens,
                                      should_stop=should_stop, model=load_base()), model=name))
    stopped = next((r for r in scored if r["stopped"]), None)
    if stopped is not None:
        so_far = f" (accuracy so far {stopped['accuracy']:.1%})" if stopped["n"] else ""
        print(f"smoldist | eval gsm8k stopped by signal {stop.signum} after {stopped['n']} of {stopped['asked']} questions"
              f"{'' if stopped is result else ' of the base'}{so_far}; the model is saved: score it with "
              f"`smoldist eval {output_dir} --data {cfg.data}{' --compare' if cfg.compare else ''}`", flush=True)
        return result  # a partial accuracy is not logged as the run's
    compared = paired(*scored) if len(scored) == 2 else None
    if compared is not None:
        write_json(str(Path(output_dir) / "eval_compare.json"), compared)
    by = result["extracted_by"]
    print(f"smoldist | eval gsm8k | accuracy {result['accuracy']:.1%} ({result['correct']}/{result['n']}) | "
          f"'####' {by.get('####', 0)}, last number {by.get('last number', 0)}, none {by.get('none', 0)}", flush=True)
    if compared is not None:
        print(f"smoldist | eval gsm8k | {summary(compared)}", flush=True)
    import wandb

    if wandb.run is not None:
        cols = ["question", "completion", "extracted", "gold", "correct"]
        table = wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in result["records"][:cfg.samples]])
        logged = {"eval/gsm8k_accuracy": result["accuracy"], "eval/gsm8k_n": result["n"],
                  "eval/gsm8k_fallback": by.get("last number", 0), "eval/gsm8k_samples": table}
        if compared is not None:
            logged.update({"eval/gsm8k_accuracy_base": compared["base"]["accuracy"], "eval/gsm8k_delta": compared["delta"],
                           "eval/gsm8k_p_value": compared["p_value"]})
            wandb.run.summary["eval/verdict"] = compared["verdict"]
        wandb.run.log(logged)
    return result


def _stop_check(stop):
    """Asked before each generation batch: has a stop signal come (SMOLDIST_FAULT_SIGNAL_AT_END_EVAL_BATCH sends one)?"""
    import os
    import signal

    from smoldist.preemption import END_EVAL_FAULT_ENV

    fault, batches = int(os.environ.get(END_EVAL_FAULT_ENV) or 0), 0

    def should_stop() -> bool:
        nonlocal batches
        if fault and batches == fault:
            os.kill(os.getpid(), signal.SIGUSR1)  # a real signal through the real handler
        batches += 1
        return stop is not None and stop.signum is not None

    return should_stop


def token_mean_loss(trainer) -> tuple[float, int]:
    """(summed cross-entropy over every label token of the trainer's eval split / their number, that number): the same
    at any batch size, unlike the Trainer's eval_loss, a mean of batch means that weighs a short batch's tokens more."""
    import torch
    from tqdm import tqdm

    model, total, count = trainer.model.eval(), 0.0, 0
    loader = trainer.get_eval_dataloader()  # the trainer's own collator, device placement and autocast
    for batch in tqdm(loader, desc="eval loss", unit=" batch", disable=not trainer.is_world_process_zero(), dynamic_ncols=True):
        batch = trainer._prepare_inputs(batch)
        n = int((batch["labels"][..., 1:] != -100).sum())  # the tokens the causal-LM loss scores (labels shift by one)
        with torch.no_grad(), trainer.autocast_smart_context_manager():
            loss = model(**batch, num_items_in_batch=n).loss  # summed over the batch, divided by n
        total, count = total + float(loss) * n, count + n
    return total / count, count
