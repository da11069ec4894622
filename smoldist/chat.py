"""One chat reply from a trained model (a full model or a LoRA run), through the chat template saved with it."""

from __future__ import annotations


def stop_token_ids(tok) -> list[int]:
    """Where generation stops: the chat template's end of turn (`<|im_end|>`) if the tokenizer has it, and eos."""
    stops = []
    if "<|im_end|>" in tok.get_vocab():
        stops.append(tok.convert_tokens_to_ids("<|im_end|>"))
    if tok.eos_token_id is not None and tok.eos_token_id not in stops:
        stops.append(tok.eos_token_id)
    return stops


def chat(model_dir: str, prompt: str, max_new_tokens: int = 48, system: str | None = None) -> str:
    import torch
    from transformers import AutoTokenizer

    from smoldist.lora import load_model

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = load_model(model_dir, torch.float32)
    model.eval()
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=stop_token_ids(tok), pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
