"""The store's key: every input that changes the tokens, and nothing else, resolved before any work.

`plan_store` resolves the sources, the tokenizer and the template, hashes them into the key and says
where the store for (model, data) lives. `prepare` builds it there; `preview`, `submit` and `eval`
use the plan to find or show it without building anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from smoldist.config import DataConfig, ModelConfig
from smoldist.data.sources import ResolvedSource, check_local_options, resolve_source
from smoldist.data.templates import recipe_template
from smoldist.data.templates.derive import check_end_of_turn
from smoldist.data.templates.tools import ToolSupport
from smoldist.data.tokenizer import PrepTokenizer, load_prep_tokenizer
from smoldist.store.hash_cache import HashCache
from smoldist.store.manifest import compute_key, store_dir


def source_identity(src: ResolvedSource, hashes: HashCache | None = None) -> dict:
    """What names a source's contents for the store key (file sha256s, or hub id + revision)."""
    s, sha256 = src.spec, (hashes or HashCache(None)).sha256
    if src.kind == "hub":
        return {"hub": s.path, "name": s.name, "data_dir": s.data_dir, "split": s.split, "revision": s.revision}
    files = src.files if src.kind == "files" else sorted(str(p) for p in Path(src.files[0]).rglob("*") if p.is_file())
    return {
        "files": [{"path": os.path.abspath(f), "size": os.path.getsize(f), "sha256": sha256(f)} for f in files],
        "split": s.split if src.kind == "saved" else None,
    }


def store_key_inputs(
    data: DataConfig,
    sources: list[ResolvedSource],
    tok_hash: str,
    template: str,
    hashes: HashCache | None = None,
    added_tokens: dict[str, int] | None = None,
    bos_prefix: int | None = None,
) -> dict:
    """Everything that changes the tokens, and nothing else (learning rate, shards, num_proc stay out)."""
    converter_keys = (
        "format",
        "messages_field",
        "role_field",
        "content_field",
        "prompt_field",
        "completion_field",
        "text_field",
        "columns",
        "system_prompt",
        "prefix",
        "max_samples",
        "fraction",
    )
    inputs = {
        "sources": [
            {"identity": source_identity(s, hashes), "converter": converter_inputs(s.spec, converter_keys)}
            for s in sources
        ],
        "tokenizer_sha256": tok_hash,
        "chat_template": template,
        "seq_len": data.seq_len,
        "packing": data.packing,
        "overflow": data.overflow,
        "loss_on": data.loss_on,
        "eval_fraction": data.eval_fraction,
        "seed": data.seed,
    }
    if added_tokens:  # only then: the keys of stores built without added tokens stay what they were
        inputs["added_tokens"] = added_tokens
    if bos_prefix is not None:  # documents start with it (PrepTokenizer.bos_prefix); other keys stay what they were
        inputs["bos_prefix"] = bos_prefix
    if any(s.spec.format == "preference" for s in sources):  # an SFT and a DPO store of the same data never collide
        inputs["method"] = "dpo"
    return inputs


def converter_inputs(spec, keys: tuple) -> dict:
    """A source's converter options in the key; `serialize` only when set, so other stores keep their keys."""
    out = {k: getattr(spec, k) for k in keys}
    if spec.serialize is not None:
        out["serialize"] = spec.serialize
    return out


@dataclass
class StorePlan:
    """Where the store for a recipe lives, and everything its key was computed from."""

    sources: list[ResolvedSource]
    tok: PrepTokenizer
    template: str
    inputs: dict
    key: str
    path: Path
    hashes: HashCache  # sha256s by stat, in the store root: unchanged sources and shards are not read again
    template_name: str = ""  # model.chat_template as the recipe says it (named when the template ignores tools)

    @property
    def tool_support(self) -> ToolSupport:
        return ToolSupport(self.template, self.template_name, self.tok.special_tokens)


def plan_store(model: ModelConfig, data: DataConfig) -> StorePlan:
    """Resolve sources, tokenizer and template, and compute the key, without building anything."""
    sources = [resolve_source(s, f"data.sources.{i}") for i, s in enumerate(data.sources)]
    for i, src in enumerate(sources):
        check_local_options(src, f"data.sources.{i}")
    tok = load_prep_tokenizer(model)
    template = recipe_template(model, data, bos=tok.bos_prefix is not None)
    if any(s.format != "text" for s in data.sources):  # refused before any work: a turn end the model cannot stop on
        check_end_of_turn(template, tok.backend, tok.special_tokens)
    hashes = HashCache.for_store(data.store)
    inputs = store_key_inputs(data, sources, tok.fingerprint, template, hashes, tok.added, tok.bos_prefix)
    hashes.save()
    key = compute_key(inputs)
    return StorePlan(sources, tok, template, inputs, key, store_dir(data.store, key), hashes, model.chat_template)
