"""Greedy generation through the chat template, stopping where an assistant turn ends; `smoldist chat`.

    smoldist chat runs/demo "What is 2 plus 3?"
    smoldist chat runs/demo < questions.txt      # no prompt: one reply per line of stdin

Both stop at the template's end-of-turn token and eos (model/stop_tokens.py), so a model that learnt to end
its turns is not cut off or run on. A full model or a LoRA run (base + adapter) alike.
"""

from __future__ import annotations

from smoldist.model.lora import load_model, load_tokenizer_of
from smoldist.model.stop_tokens import stop_token_ids


def generate(
    model, tok, questions: list[str], batch_size: int, max_new_tokens: int, progress: bool = True, should_stop=None
) -> list[str]:
    """Greedy completions, batched with left padding, each stopping at the end of its turn; fewer than asked
    when `should_stop()` (asked before each batch) says so."""
    import torch
    from tqdm import tqdm

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
            chunk = questions[i : i + batch_size]
            texts = [
                tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
                for q in chunk
            ]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                ids = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stops,
                    pad_token_id=tok.pad_token_id,
                )
            new = ids[:, enc["input_ids"].shape[1] :]
            out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
            bar.update(len(chunk))
    return out


DEFAULT_REPLY_TOKENS = 256  # a gsm8k worked answer runs 100-300 tokens; the turn's end token stops it sooner


def reply_budget(model_dir: str) -> int:
    """max_new_tokens of the model's generation_config.json when it sets one, else DEFAULT_REPLY_TOKENS."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_dir).max_new_tokens or DEFAULT_REPLY_TOKENS
    except OSError:  # no generation_config.json
        return DEFAULT_REPLY_TOKENS


def chat_lines(model_dir: str, prompts, max_new_tokens: int | None = None, system: str | None = None):
    """One reply per prompt, each a fresh one-turn chat, from a model loaded once; `prompts` may be a stream."""
    import torch

    tok = load_tokenizer_of(model_dir)
    model = load_model(model_dir, torch.float32)
    model.eval()
    budget = max_new_tokens or reply_budget(model_dir)
    for prompt in prompts:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=budget,
                do_sample=False,
                eos_token_id=stop_token_ids(tok),
                pad_token_id=tok.pad_token_id,
            )
        yield tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def chat(model_dir: str, prompt: str, max_new_tokens: int | None = None, system: str | None = None) -> str:
    return next(chat_lines(model_dir, [prompt], max_new_tokens, system))
