"""Builds the offline demo's assets: conversations written for smoldist and a BPE tokenizer trained on them.

    python -m smoldist.demo.build_assets      # rewrites smoldist/demo/{conversations.jsonl,tokenizer/}

The outputs are committed; this script is how they were made (deterministic for a given seed).
Two kinds of records: smoltalk-like multi-turn chats (facts, small talk, with and without a
system prompt) and gsm8k-like word problems whose answers end in `#### <number>`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

NAMES = [
    "Ada",
    "Ben",
    "Cleo",
    "Dev",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivo",
    "Jun",
    "Kai",
    "Lena",
    "Milo",
    "Nora",
    "Omar",
    "Pia",
]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "shells", "stamps"]
COLOURS = {
    "the sky": "blue",
    "fresh grass": "green",
    "snow": "white",
    "a lemon": "yellow",
    "a tomato": "red",
    "coal": "black",
}
ANIMALS = {"cat": "meows", "dog": "barks", "cow": "moos", "duck": "quacks", "owl": "hoots", "sheep": "bleats"}
LEGS = {"spider": 8, "ant": 6, "dog": 4, "bird": 2, "snake": 0, "octopus": 8}
SYSTEMS = [
    "You are a concise assistant.",
    "You are a friendly tutor who explains step by step.",
    "Answer in one sentence.",
]
GREETINGS = [
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi there.", "Hi! What would you like to talk about?"),
    ("Good morning!", "Good morning! What can I do for you?"),
]
THANKS = [("Thank you!", "You are welcome!"), ("Thanks a lot.", "Happy to help."), ("Great, thanks.", "Any time!")]


def fact_turn(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["colour", "animal", "legs", "add", "spell"])
    if kind == "colour":
        thing, colour = rng.choice(sorted(COLOURS.items()))
        return f"What colour is {thing}?", f"The colour of {thing} is {colour}."
    if kind == "animal":
        animal, sound = rng.choice(sorted(ANIMALS.items()))
        return f"What sound does a {animal} make?", f"A {animal} {sound}."
    if kind == "legs":
        animal, legs = rng.choice(sorted(LEGS.items()))
        return f"How many legs does a {animal} have?", f"A {animal} has {legs} legs."
    if kind == "add":
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    word = rng.choice(["cat", "tree", "river", "model", "token", "chat"])
    return f"How do you spell {word} backwards?", f"{word} backwards is {word[::-1]}."


def chat_record(rng: random.Random) -> dict:
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
    if rng.random() < 0.5:
        user, assistant = rng.choice(GREETINGS)
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    for _ in range(rng.randint(1, 3)):
        user, assistant = fact_turn(rng)
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    if rng.random() < 0.4:
        user, assistant = rng.choice(THANKS)
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages}


def word_problem(rng: random.Random) -> dict:
    name, other = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    a, b = rng.randint(2, 30), rng.randint(2, 30)
    kind = rng.choice(["buy", "give", "times"])
    if kind == "buy":
        q = f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?"
        ans = f"{name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {item} now.\n#### {a + b}"
    elif kind == "give":
        a, b = max(a, b), min(a, b)
        q = f"{name} has {a} {item} and gives {b} to {other}. How many {item} are left?"
        ans = f"{name} has {a} - {b} = <<{a}-{b}={a - b}>>{a - b} {item} left.\n#### {a - b}"
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        q = f"{name} fills {a} boxes with {b} {item} each. How many {item} are there in all?"
        ans = f"There are {a} * {b} = <<{a}*{b}={a * b}>>{a * b} {item} in all.\n#### {a * b}"
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]}


def build_records(n_chat: int = 260, n_math: int = 200, seed: int = 1234) -> list[dict]:
    rng = random.Random(seed)
    records = [chat_record(rng) for _ in range(n_chat)] + [word_problem(rng) for _ in range(n_math)]
    rng.shuffle(records)
    return records


def train_tokenizer(texts: list[str], out_dir: Path, vocab_size: int = 1024) -> None:
    """Byte-level BPE with SmolLM2's special tokens, saved so that AutoTokenizer loads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=8192,
    )
    fast.save_pretrained(out_dir)


def main() -> None:
    records = build_records()
    path = HERE / "conversations.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    texts = [f"{m['role']}\n{m['content']}" for r in records for m in r["messages"]]
    texts.append("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    train_tokenizer(texts, HERE / "tokenizer")
    print(f"wrote {len(records)} conversations to {path} and a tokenizer to {HERE / 'tokenizer'}")


if __name__ == "__main__":
    main()
