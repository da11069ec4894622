"""Building the model and its tokenizer: from the hub or a local directory, or randomly initialised from an
architecture dict. The tokenizer is the one `prepare` hashed (data/tokenizer.py), loaded by transformers."""

from __future__ import annotations

import inspect

from smoldist.config import ModelConfig, closest, resolve_path
from smoldist.data.tokenizer import tokenizer_dir, tokens_to_add
from smoldist.errors import DataError, RecipeError


def load_tokenizer(model: ModelConfig):
    """The transformers tokenizer for training and saving (the same files `prepare` tokenized with)."""
    from transformers import AutoTokenizer

    folder = tokenizer_dir(model)
    tok = AutoTokenizer.from_pretrained(str(folder))
    if not getattr(tok, "is_fast", False):
        raise DataError(f"model.tokenizer: '{folder}' has no fast (Rust) tokenizer; smoldist needs tokenizer.json")
    added = tokens_to_add(model, lambda t: t in tok.get_vocab())
    if added:  # the same tokens, in the same order, as prepare added: the same ids (a test checks)
        from tokenizers import AddedToken

        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in added], special_tokens=True)
    tok.smoldist_added = {t: tok.convert_tokens_to_ids(t) for t in added}  # build_model makes rows for them
    return tok


def init_added_rows(model, added: dict[str, int], eos_id: int | None) -> None:
    """Rows of tokens just added, in the input embedding and (when untied) the output head. ChatML's `<|im_end|>`
    starts as a copy of the model's own end-of-text row: the base model already predicts that where a text ends, so
    the fine-tune can stop from its first steps (a mean row scores the average logit, about 1/V, and Adam moves it by
    ~lr a step: thousands of steps before it can win). Others start at the mean of the existing rows."""
    import torch

    first = min(added.values())
    with torch.no_grad():
        layers = [model.get_input_embeddings(), model.get_output_embeddings()]
        for w in {id(x.weight): x.weight for x in layers if x is not None}.values():
            w[first:] = w[:first].mean(dim=0, keepdim=True)
            if "<|im_end|>" in added and eos_id is not None and eos_id < first:
                w[added["<|im_end|>"]] = w[eos_id]


def grow_vocabulary(model, n_tokens: int, added: dict[str, int], eos_id: int | None) -> None:
    """Embeddings for a vocabulary with `added` tokens: grown to `n_tokens` rows when smaller (ties stay tied:
    transformers resizes both and re-ties), the added rows initialised. Training and loading a LoRA run (lora.py)
    both call it, so an adapter meets the base it was trained on."""
    if n_tokens > model.config.vocab_size:
        layers = [model.get_input_embeddings(), model.get_output_embeddings()]
        old = {x.weight.data_ptr(): x.weight.nbytes for x in layers if x is not None}
        model.resize_token_embeddings(n_tokens, mean_resizing=False)
        for ptr, nbytes in old.items():
            release_file_pages(ptr, nbytes)
    if added:
        init_added_rows(model, added, eos_id)


MADV_PAGEOUT = 21  # Linux 5.4+: reclaim these pages; their content is kept (read back from the file if touched)


def release_file_pages(ptr: int, nbytes: int) -> None:
    """Drop the resident pages of a table that the grown one replaced, when they map the checkpoint's file:
    transformers maps the weights from the file, copying the old table into the grown one reads all its pages in, and
    the other weights keep the file mapped, so a second table's worth would stay in the process's memory (RSS)."""
    import ctypes
    import os
    import sys

    if sys.platform != "linux" or not file_mapped(ptr):
        return
    page = os.sysconf("SC_PAGE_SIZE")
    start, end = -(-ptr // page) * page, (ptr + nbytes) // page * page
    if end > start:  # a kernel without MADV_PAGEOUT answers EINVAL: the pages stay, as they did before
        ctypes.CDLL(None, use_errno=True).madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_PAGEOUT)


def file_mapped(ptr: int) -> bool:
    """True when the address lies in a mapping of a file (/proc/self/maps), not anonymous memory."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= ptr < hi:
                return len(fields) == 6 and fields[5].startswith("/")
    return False


def added_rows(model, added: dict[str, int]) -> list[int]:
    """The embedding rows `init_added_rows` writes: every row from the first added token's on."""
    return list(range(min(added.values()), model.get_input_embeddings().weight.shape[0])) if added else []


def architecture_config(init: dict, tokenizer=None):
    """A transformers config from `model.init` (LlamaConfig keys by default), sized to the tokenizer if given."""
    from transformers import CONFIG_MAPPING, AutoConfig

    init = dict(init)
    model_type = init.pop("model_type", "llama")
    if model_type not in CONFIG_MAPPING:
        raise RecipeError(
            f"model.init.model_type: unknown '{model_type}'{closest(model_type, list(CONFIG_MAPPING.keys()))}"
        )
    cls = CONFIG_MAPPING[model_type]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]
    valid += list(cls().to_dict())  # keys handled through **kwargs by the base config
    for key in init:
        if key not in valid:
            raise RecipeError(f"unknown key 'model.init.{key}' for {cls.__name__}{closest(key, sorted(set(valid)))}")
    if tokenizer is not None:
        init.setdefault("vocab_size", len(tokenizer))
        init.setdefault("bos_token_id", tokenizer.bos_token_id)
        init.setdefault("eos_token_id", tokenizer.eos_token_id)
        init.setdefault("pad_token_id", tokenizer.pad_token_id)
    return AutoConfig.for_model(model_type, **init)


def model_config(cfg: ModelConfig):
    """The model's transformers config, without loading its weights."""
    from transformers import AutoConfig

    if cfg.init:
        return architecture_config(cfg.init)
    name = resolve_path(cfg.name_or_path)
    try:
        return AutoConfig.from_pretrained(name, revision=cfg.revision)
    except OSError as e:
        raise RecipeError(f"model.name_or_path: cannot load '{name}': {e}") from None


def rope_scaled(config) -> bool:
    """True when the config stretches RoPE past its trained positions (rope_parameters, or the older rope_scaling)."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    per_layer = [v for v in rope.values() if isinstance(v, dict)] or [rope]  # one per attention type, or one
    return any(r.get("rope_type", r.get("type", "default")) not in (None, "default") for r in per_layer)


def check_seq_len(cfg: ModelConfig, seq_len: int) -> None:
    """Refuse rows longer than the positions the model was trained for, unless RoPE scaling is configured."""
    try:
        config = model_config(cfg)
    except RecipeError:
        raise
    except Exception:  # noqa: BLE001 - an architecture transformers rejects: the model build reports it, as before
        return
    positions = getattr(config, "max_position_embeddings", None)
    if positions and seq_len > positions and not rope_scaled(config):
        raise RecipeError(
            f"data.seq_len: {seq_len} is longer than the model's max_position_embeddings ({positions}); lower "
            f"data.seq_len to at most {positions}, or use a model whose config sets rope scaling (rope_parameters)"
        )


def attention_for(cfg: ModelConfig, device_type: str):
    """`attention_choice.choose` for a recipe's model section, from the model's config alone (no weights)."""
    from smoldist.model.attention_choice import AUTO, VARLEN, AttentionChoice, choose

    if cfg.attn_implementation not in (AUTO, VARLEN):
        return AttentionChoice(cfg.attn_implementation, cfg.attn_implementation, "as the recipe asks")
    return choose(cfg.attn_implementation, model_config(cfg), device_type, cfg.dtype)


def build_model(cfg: ModelConfig, tokenizer, training: bool = True, device_type: str | None = None):
    """The model, with the attention `attention_choice.choose` picks (kept as `model.smoldist_attention`)."""
    import torch
    from transformers import AutoModelForCausalLM

    from smoldist.model.attention import check_attn_implementation, register
    from smoldist.model.attention_choice import choose
    from smoldist.model.precision import load_dtype

    check_attn_implementation(cfg.attn_implementation, training)
    register()  # `varlen` becomes a name transformers knows
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.init:
        config = architecture_config(cfg.init, tokenizer)
    else:
        config = model_config(cfg)
    choice = choose(cfg.attn_implementation, config, device_type, cfg.dtype)

    dtype = getattr(torch, load_dtype(cfg.dtype, cfg.master_weights))  # fp32 master weights unless opted out
    if cfg.init:
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=choice.name)
    else:
        name = resolve_path(cfg.name_or_path)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                name, revision=cfg.revision, dtype=dtype, attn_implementation=choice.name
            )
        except OSError as e:
            raise RecipeError(f"model.name_or_path: cannot load '{name}': {e}") from None
    added = getattr(tokenizer, "smoldist_added", {})
    if added and not cfg.init:
        if hasattr(model.get_input_embeddings().weight, "ds_id"):
            raise RecipeError(
                "model.chat_template: chatml adds tokens to this vocabulary, which smoldist does not do "
                "under ZeRO-3 (partitioned embeddings); use ZeRO-2 or DDP"
            )
        grow_vocabulary(model, len(tokenizer), added, tokenizer.eos_token_id)
    if len(tokenizer) > model.config.vocab_size:
        raise RecipeError(
            f"model: tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}"
        )
    model.smoldist_attention = choice
    return model
