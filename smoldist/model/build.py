"""Building the model and its tokenizer: from the hub or a local directory, or randomly initialised from an
architecture dict. The tokenizer is the one `prepare` hashed (data/tokenizer.py), loaded by transformers."""

from __future__ import annotations

import inspect

from smoldist.config import ModelConfig, closest, resolve_path
from smoldist.data.tokenizer import tokenizer_dir
from smoldist.errors import DataError, RecipeError


def load_tokenizer(model: ModelConfig):
    """The transformers tokenizer for training and saving (the same files `prepare` tokenized with)."""
    from transformers import AutoTokenizer

    folder = tokenizer_dir(model)
    tok = AutoTokenizer.from_pretrained(str(folder))
    if not getattr(tok, "is_fast", False):
        raise DataError(f"model.tokenizer: '{folder}' has no fast (Rust) tokenizer; smoldist needs tokenizer.json")
    return tok


def architecture_config(init: dict, tokenizer):
    """A transformers config from `model.init` (LlamaConfig keys by default), sized to the tokenizer."""
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
    init.setdefault("vocab_size", len(tokenizer))
    init.setdefault("bos_token_id", tokenizer.bos_token_id)
    init.setdefault("eos_token_id", tokenizer.eos_token_id)
    init.setdefault("pad_token_id", tokenizer.pad_token_id)
    return AutoConfig.for_model(model_type, **init)


def build_model(cfg: ModelConfig, tokenizer, training: bool = True):
    import torch
    from transformers import AutoModelForCausalLM

    from smoldist.model.attention import check_attn_implementation, register
    from smoldist.model.precision import load_dtype

    check_attn_implementation(cfg.attn_implementation, training)
    register()  # `varlen` becomes a name transformers knows

    dtype = getattr(torch, load_dtype(cfg.dtype, cfg.master_weights))  # fp32 master weights unless opted out
    if cfg.init:
        config = architecture_config(cfg.init, tokenizer)
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=cfg.attn_implementation)
    else:
        name = resolve_path(cfg.name_or_path)
        try:
            model = AutoModelForCausalLM.from_pretrained(name, revision=cfg.revision, dtype=dtype,
                                                         attn_implementation=cfg.attn_implementation)
        except OSError as e:
            raise RecipeError(f"model.name_or_path: cannot load '{name}': {e}") from None
    if len(tokenizer) > model.config.vocab_size:
        raise RecipeError(
            f"model: tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}"
        )
    return model
