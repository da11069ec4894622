"""What tests share: the repository's paths, a tiny SmolLM2-shaped model, small conversations, recipe writers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # small real datasets (tests/fixtures/README.md)
GSM8K_4 = FIXTURES / "gsm8k_test_4.jsonl"  # the first 4 real gsm8k test records

TINY_INIT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}

CONVERSATIONS = [
    {
        "messages": [
            {"role": "user", "content": "What is 2 plus 3?"},
            {"role": "assistant", "content": "2 plus 3 is 5."},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "What colour is snow?"},
            {"role": "assistant", "content": "Snow is white."},
        ]
    },
    {"messages": [{"role": "user", "content": "Ünïcödé ✓ 🚀?"}, {"role": "assistant", "content": "Ja, 🚀 ✓."}]},
    {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]},
]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records))
    return path


def recipe_dict(tmp_path: Path, sources: list[dict], **sections) -> dict:
    raw = {
        "model": {"init": dict(TINY_INIT), "tokenizer": "pkg:demo/tokenizer", "dtype": "float32"},
        "data": {"sources": sources, "seq_len": 128, "store": str(tmp_path / "store"), "num_proc": 1},
        "train": {
            "output_dir": str(tmp_path / "run"),
            "max_steps": 3,
            "per_device_train_batch_size": 2,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_steps": 2,
            "gradient_checkpointing": False,
            "seed": 0,
            "dataloader_num_workers": 0,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    for section, values in sections.items():
        raw[section].update(values)
    return raw


def one_row_recipe(tmp_path: Path, conversations_file: Path, max_steps: int, save_steps: int) -> Path:
    """The tiny recipe with one row per device per micro-batch, as the multi-process tests run it."""
    train = {"max_steps": max_steps, "save_steps": save_steps, "per_device_train_batch_size": 1}
    return write_recipe(tmp_path, recipe_dict(tmp_path, [{"path": str(conversations_file)}], train=train))


def write_recipe(tmp_path: Path, raw: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


# ---- multi-process runs: real `accelerate launch` subprocesses, and proof that they were one job


CONFIGS = REPO / "accelerate_configs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(worker: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Two gloo ranks of a test worker script under a real torchrun, with this checkout importable."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    return subprocess.run(
        [*cmd, str(worker), *args], capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env
    )


def accelerate(args: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(free_port()), *args]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **(env or {}))
    p = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)
    return p


def processes_with(tag: str, extra: str = "") -> list[int]:
    """Pids whose environment holds `tag` (a NAME=value a test gave its launch), and `extra` too if given."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if tag.encode() in environ and (not extra or extra.encode() in environ):
            found.append(int(pid))
    return found


def ranks(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "ranks").glob("rank-*.json"))]


def losses(run_dir: Path) -> list[float]:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def assert_one_job(run_dir: Path, world: int) -> None:
    seen = ranks(run_dir)
    assert [r["rank"] for r in seen] == list(range(world)), seen
    assert {r["world_size"] for r in seen} == {world}
    assert len({r["param_sha256"] for r in seen}) == 1, "ranks ended with different weights"


# ---- padding-free rows through the collator TRL trains with, on a tiny model


def tiny_model(attn: str = "sdpa"):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from smoldist.model.attention import register

    register()  # makes "varlen" a name transformers knows
    torch.manual_seed(0)
    # flex_attention on CPU runs a torch.compile'd kernel that returns NaN for head_dim 8 or 16 (torch 2.13): give it
    # SmolLM2's head_dim 64 (still GQA); the others keep the smaller shape
    heads = (2, 1) if attn == "flex_attention" else (4, 2)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=128 if attn == "flex_attention" else 32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=heads[0],
        num_key_value_heads=heads[1],
        max_position_embeddings=256,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.config._attn_implementation = attn
    return model


def documents(seed=0, n=5):
    import torch

    g = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(n):
        length = int(torch.randint(5, 30, (1,), generator=g))
        ids = torch.randint(0, 64, (length,), generator=g).tolist()
        labels = [-100] + [t if i % 3 else -100 for i, t in enumerate(ids)][1:]  # some masked, first never trained
        docs.append((ids, labels))
    return docs


def collate(rows):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)


def as_row(docs):
    return {
        "input_ids": [t for ids, _ in docs for t in ids],
        "labels": [t for _, lab in docs for t in lab],
        "seq_lengths": [len(ids) for ids, _ in docs],
    }


# ---- LoRA: a tiny pretrained base saved to disk (an adapter needs a base that reloads)


LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def save_tiny_base(folder: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from smoldist.model.build import architecture_config

    tok = AutoTokenizer.from_pretrained(REPO / "smoldist" / "demo" / "tokenizer")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(architecture_config(TINY_INIT, tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# ---- the real SmolLM2-135M (tests/real_model.py materialises it)


def real_recipe(tmp_path: Path, model_dir: Path, **train) -> Path:
    raw = {
        "model": {"name_or_path": str(model_dir), "dtype": "float32"},
        "data": {
            "sources": [{"path": str(FIXTURES / "gsm8k_train_sample.jsonl"), "format": "gsm8k"}],
            "seq_len": 256,
            "packing": "none",
            "overflow": "truncate",
            "store": str(tmp_path / "store"),
            "num_proc": 1,
        },
        "train": {
            "output_dir": str(tmp_path / "run"),
            "per_device_train_batch_size": 1,
            "logging_steps": 1,
            "save_strategy": "no",
            "activation_checkpointing": False,
            "dataloader_num_workers": 0,
            "seed": 0,
            **train,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    return write_recipe(tmp_path, raw)


# ---- scoring


def own_eval_loss(model, rows) -> tuple[float, int]:
    """The test's own held-out loss: plain transformers, one unpacked row at a time, cross-entropy summed over every
    label token (the label of position i+1 scores the logits at i) and divided by their number."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = model(torch.tensor([row["input_ids"]])).logits[0, :-1].float()
            labels = torch.tensor(row["labels"][1:])
            keep = labels != -100
            total += float(torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count, count


# ---- chat templates of other model families (tests/data/test_derived_masks.py, test_real_templates.py)

# Meta-Llama-3-8B-Instruct's template, as its tokenizer_config.json ships it.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# Gemma's: the system prompt folded into the first user turn, the assistant called `model`.
GEMMA = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + "
    "'\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = \"\" -%}"
    "{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}"
    "{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)
GEMMA_SPECIALS = ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]


def assert_exact(folder, template: str, eot: str, convs: list[list[dict]], chat_template: str = "tokenizer") -> None:
    """Every document's tokens are apply_chat_template's, and its trained tokens are the assistant turns + eot."""
    from transformers import AutoTokenizer

    from smoldist.config import ModelConfig
    from smoldist.data.converters import Document
    from smoldist.data.encode import Encoder
    from smoldist.data.tokenizer import load_prep_tokenizer

    tok = load_prep_tokenizer(ModelConfig(tokenizer=str(folder), init={"hidden_size": 8}, chat_template=chat_template))
    hf = AutoTokenizer.from_pretrained(str(folder))
    hf.chat_template = template
    batch = Encoder.for_template(tok, template, "assistant").encode([Document(messages=m) for m in convs])
    start = 0
    for msgs, n in zip(convs, batch.lengths.tolist()):
        ids, labels = batch.ids[start : start + n].tolist(), batch.labels[start : start + n].tolist()
        start += n
        assert ids == list(hf.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"])
        turns, cur = [], []
        for t, lab in zip(ids, labels):
            if lab != -100:
                cur.append(t)
                if t == tok.token_to_id(eot):
                    turns.append(tok.decode(cur)), cur.clear()
        assert cur == []
        assert turns == [m["content"].strip() + eot for m in msgs if m["role"] == "assistant"]


def family_tokenizer(folder: Path, template: str | None, specials: list[str], bos: str, eos: str) -> Path:
    """The demo tokenizer plus a family's special tokens, saved with that family's template (None: no template)."""
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(REPO / "smoldist" / "demo" / "tokenizer" / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "TokenizersBackend", "bos_token": bos, "eos_token": eos, "pad_token": "<|endoftext|>"}
    if template is not None:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def save_base_without_chatml(folder: Path, embedding_std: float | None = None, tied: bool = True) -> Path:
    """A tiny base model (tied embeddings unless told) whose byte-level BPE vocabulary lacks ChatML and a template.

    `embedding_std` rescales its embedding table: at the 0.02 of a random init, a tied head's logits stay within
    about +-0.6, so a run that freezes the table (LoRA) cannot make any old token likely; a pretrained one can."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from smoldist.model.build import architecture_config

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    corpus = [m["content"] for c in CONVERSATIONS for m in c["messages"]] * 4
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(architecture_config(dict(TINY_INIT, tie_word_embeddings=tied), tok))
    if embedding_std is not None:
        with torch.no_grad():
            table = model.get_input_embeddings().weight
            table.mul_(embedding_std / table.std())
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def chatml_base_recipe(tmp_path: Path, base: Path, reply: str = "ok", **model) -> Path:
    """60 steps of one-line ChatML chats ("Hello i!" -> reply) on `base`: enough for a tiny model to learn to stop."""
    convs = [
        {"messages": [{"role": "user", "content": f"Hello {i}!"}, {"role": "assistant", "content": reply}]}
        for i in range(16)
    ]
    train = {"max_steps": 60, "learning_rate": 1e-2, "save_steps": 60, "per_device_train_batch_size": 4}
    raw = recipe_dict(tmp_path, [{"path": str(write_jsonl(tmp_path / "c.jsonl", convs))}], train=train)
    raw["model"] = {"name_or_path": str(base), "chat_template": "chatml", "dtype": "float32", **model}
    return write_recipe(tmp_path, raw)
