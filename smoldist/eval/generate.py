"""Greedy generation through the chat template, stopping where an assistant turn ends; `smoldist chat`.

    smoldist chat runs/demo "What is 2 plus 3?" [--system "Be brief."]
    smoldist chat runs/demo                      # in a terminal: a session that keeps the turns
    smoldist chat runs/demo < questions.txt      # from a pipe: one reply per line, each a fresh chat
    smoldist chat runs/demo --conversation chat.json   # the next assistant turn of a conversation

Both stop at the template's end-of-turn token and eos (model/stop_tokens.py), so a model that learnt to end
its turns is not cut off or run on. A full model or a LoRA run (base + adapter) alike.
"""

from __future__ import annotations

from smoldist.errors import DataError
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


class ChatSession:
    """A model loaded once and the turns so far: each reply is to the whole conversation (`keep_turns`), or to the
    one prompt alone (one prompt a line from a pipe)."""

    def __init__(self, model_dir: str, max_new_tokens: int | None = None, system: str | None = None):
        import torch

        self.tok = load_tokenizer_of(model_dir)
        self.model = load_model(model_dir, torch.float32).eval()
        self.budget = max_new_tokens or reply_budget(model_dir)
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []

    def reply_to(self, messages: list[dict]) -> str:
        """The greedy reply to `messages`, stopping at the end of the assistant turn."""
        import torch

        tok = self.tok
        inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.budget,
                do_sample=False,
                eos_token_id=stop_token_ids(tok),
                pad_token_id=tok.pad_token_id,
            )
        return tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    def say(self, prompt: str, keep_turns: bool = True) -> str:
        turn = {"role": "user", "content": prompt}
        if not keep_turns:
            return self.reply_to([*self.messages[:1], turn] if self.has_system else [turn])
        self.messages.append(turn)
        reply = self.reply_to(self.messages)
        self.messages.append({"role": "assistant", "content": reply})
        return reply

    @property
    def has_system(self) -> bool:
        return bool(self.messages) and self.messages[0]["role"] == "system"


def chat_lines(
    model_dir: str, prompts, max_new_tokens: int | None = None, system: str | None = None, keep_turns: bool = False
):
    """One reply per prompt from a model loaded once; `prompts` may be a stream. `keep_turns`: one conversation
    (an interactive session), else each prompt a fresh one-turn chat."""
    session = ChatSession(model_dir, max_new_tokens, system)
    for prompt in prompts:
        yield session.say(prompt, keep_turns)


def chat(model_dir: str, prompt: str, max_new_tokens: int | None = None, system: str | None = None) -> str:
    return next(chat_lines(model_dir, [prompt], max_new_tokens, system))


def read_conversation(path: str) -> list[dict]:
    """A conversation to continue: a JSON list of {role, content}, {"messages": [...]}, or a JSONL file of turns."""
    import json
    from pathlib import Path

    text = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else None
    if text is None:
        raise DataError(f"--conversation: no file '{path}'")
    try:
        data = json.loads(text) if path.endswith(".json") else [json.loads(x) for x in text.splitlines() if x.strip()]
    except json.JSONDecodeError as e:
        raise DataError(f"--conversation {path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(data, dict):
        data = data.get("messages")
    if len(data or []) == 1 and isinstance(data[0], dict) and "messages" in data[0]:
        data = data[0]["messages"]  # one record of a messages dataset
    roles = ("system", "user", "assistant", "tool")
    if not data or not all(isinstance(m, dict) and m.get("role") in roles and "content" in m for m in data):
        raise DataError(
            f"--conversation {path}: expected a list of turns {{role: {'/'.join(roles)}, content}} "
            '(a JSON list, {"messages": [...]}, or one turn a line)'
        )
    return data


def continue_conversation(
    model_dir: str, messages: list[dict], max_new_tokens: int | None = None, system: str | None = None
) -> str:
    """The next assistant turn of `messages` (with `system` first when they have no system turn)."""
    session = ChatSession(model_dir, max_new_tokens, system)
    if session.has_system and messages[0]["role"] != "system":
        messages = [*session.messages, *messages]
    return session.reply_to(messages)
