"""The tokenizer as `prepare` needs it: the Rust tokenizer, its special tokens, and a content hash.

Loading it through the `tokenizers` library alone keeps transformers (3 s to import) out of
`smoldist prepare`; training loads the same files with `AutoTokenizer` (model/build.py). A test checks that
both give the same tokens for the same text.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from smoldist.config import ModelConfig, resolve_path
from smoldist.errors import DataError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SPECIAL_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


def tokens_to_add(model: ModelConfig, has_token) -> list[str]:
    """ChatML's special tokens that the vocabulary lacks when the bundled chatml template is asked of it (a base
    model): added as special tokens, so a turn ends in one token the model can stop on. Prep and training both ask."""
    return [t for t in CHATML_TOKENS if not has_token(t)] if model.chat_template == "chatml" else []


def tokenizer_dir(model: ModelConfig) -> Path:
    """A local directory with tokenizer.json: the given one, or the hub snapshot of the model's tokenizer."""
    name = resolve_path(model.tokenizer or model.name_or_path)
    if Path(name).is_dir():
        if not (Path(name) / "tokenizer.json").is_file():
            raise DataError(f"model.tokenizer: '{name}' has no tokenizer.json (smoldist needs a fast tokenizer)")
        return Path(name)
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            name,
            revision=None if model.tokenizer else model.revision,
            allow_patterns=list(TOKENIZER_FILES) + ["chat_template.jinja"],
        )
    except Exception as e:  # noqa: BLE001 - offline, missing repo, no access: the user's to fix
        raise DataError(f"model.tokenizer: cannot load tokenizer '{name}': {type(e).__name__}: {e}") from None
    if not (Path(path) / "tokenizer.json").is_file():
        raise DataError(f"model.tokenizer: '{name}' has no tokenizer.json (smoldist needs a fast tokenizer)")
    return Path(path)


def _token_text(value) -> str | None:
    if isinstance(value, dict):  # {"content": "<|im_end|>", ...} in older configs
        return value.get("content")
    return value if isinstance(value, str) else None


@dataclass
class PrepTokenizer:
    backend: object  # tokenizers.Tokenizer
    special_tokens: dict[str, str]
    fingerprint: str
    added: dict[str, int] = field(default_factory=dict)  # special tokens added to the vocabulary, and their ids

    @property
    def eos_token_id(self) -> int:
        return self.backend.token_to_id(self.special_tokens["eos_token"])

    @functools.cached_property  # asked by the plan and each encoder: one probe encode per tokenizer
    def bos_prefix(self) -> int | None:
        """The BOS id this tokenizer puts before every text (Gemma's post-processor does; SmolLM2's does not):
        what the model saw first in pretraining, so bundled templates and plain-text documents start with it too."""
        bos = self.special_tokens.get("bos_token")
        bos_id = self.backend.token_to_id(bos) if bos else None
        first = self.backend.encode("a", add_special_tokens=True).ids[:1]
        return bos_id if bos_id is not None and first == [bos_id] else None

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)


def load_prep_tokenizer(model: ModelConfig) -> PrepTokenizer:
    from tokenizers import AddedToken, Tokenizer

    folder = tokenizer_dir(model)
    h = hashlib.sha256()
    config: dict = {}
    for name in TOKENIZER_FILES:
        path = folder / name
        if path.is_file():
            data = path.read_bytes()
            h.update(name.encode() + b"\0" + data)
            if name != "tokenizer.json":
                config.update({k: v for k, v in json.loads(data).items() if k in SPECIAL_KEYS and k not in config})
    special = {k: t for k, v in config.items() if (t := _token_text(v))}
    if "eos_token" not in special:
        raise DataError(f"model.tokenizer: {folder} names no eos_token in tokenizer_config.json")
    backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    added = tokens_to_add(model, lambda t: backend.token_to_id(t) is not None)
    if added:  # the store's tokens are those of the extended vocabulary; its key says so (store/plan.py)
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
    return PrepTokenizer(backend, special, h.hexdigest(), {t: backend.token_to_id(t) for t in added})
