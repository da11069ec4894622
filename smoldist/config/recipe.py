"""The recipe's sections as typed dataclasses: model, data, train (SFTConfig keys), tracking.

Each field carries a help string, shown when a required key is missing; `smoldist/config/load.py` reads a
YAML file and `section.key=value` overrides into these. `pkg:` paths name files shipped inside the package.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # smoldist/: `pkg:demo/x` is PACKAGE_DIR / "demo/x"
PKG_PREFIX = "pkg:"  # `pkg:demo/x` names a file shipped inside the smoldist package


def help_field(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field with a help string (named in the error when a required key is missing)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


AttnImplementation = Literal[
    "auto", "varlen", "flex_attention", "sdpa", "eager", "flash_attention_2", "flash_attention_3"
]


@dataclass
class LoraConfig:
    r: int = help_field(16, "rank of the low-rank update")
    alpha: int = help_field(32, "scaling numerator: the update is scaled by alpha / r")
    dropout: float = help_field(0.05, "dropout on the LoRA input")
    target_modules: str | list[str] = help_field(
        "all-linear", "all-linear (every linear layer but the LM head) or a list of module names"
    )


@dataclass
class ModelConfig:
    name_or_path: str | None = help_field(None, "hub id or local directory of a pretrained model")
    init: dict | None = help_field(None, "architecture dict (LlamaConfig keys): random init instead of loading weights")
    tokenizer: str | None = help_field(None, "tokenizer hub id or directory; defaults to name_or_path")
    chat_template: str = help_field(
        "smollm2", "bundled template (smollm2, chatml), `tokenizer` (the model's own), or a path to a .jinja file"
    )
    default_system_prompt: bool = help_field(
        True, "smollm2: insert SmolLM's default system prompt when a conversation has none"
    )
    dtype: Literal["bfloat16", "float16", "float32"] = help_field(
        "bfloat16",
        "compute dtype (autocast) and the dtype the final model is saved in; parameters stay fp32 (master_weights)",
    )
    master_weights: Literal["float32", "none"] = help_field(
        "float32",
        "float32: parameters and optimizer state in fp32 under `dtype` autocast; none: pure `dtype` weights (warns)",
    )
    attn_implementation: AttnImplementation = help_field(
        "auto",
        "auto: varlen (packed rows, no T x T mask) where exact for the model, else sdpa; the run says which "
        "(docs/performance.md)",
    )
    revision: str | None = help_field(None, "hub revision (branch, tag or commit) of the model")
    seed: int = help_field(0, "seed for random init")
    lora: LoraConfig | None = help_field(None, "LoRA adapter settings (see docs/lora.md); null = full fine-tuning")


@dataclass
class SourceConfig:
    path: str = help_field(help="hub id, local .jsonl/.json/.parquet file or glob, or a saved dataset directory")
    format: Literal["messages", "sharegpt", "gsm8k", "prompt_completion", "columns", "text", "preference"] = help_field(
        "messages",
        "how records become conversations (text: plain documents, loss on all tokens; preference: DPO pairs)",
    )
    name: str | None = help_field(None, "hub dataset config name (e.g. smoltalk's 'all')")
    data_dir: str | None = help_field(None, "hub dataset sub-directory (the-stack-smol: data/python)")
    split: str = help_field("train", "split to read")
    revision: str | None = help_field(None, "hub dataset revision; pins the store key")
    messages_field: str | None = help_field(
        None, "messages/sharegpt: column with the turns (default messages / conversations)"
    )
    role_field: str = help_field("role", "messages and preference: key of a turn's role")
    content_field: str = help_field("content", "messages and preference: key of a turn's text")
    prompt_field: str = help_field("prompt", "prompt_completion and preference: the prompt column")
    completion_field: str = help_field("completion", "prompt_completion: the completion column")
    text_field: str = help_field("text", "text: the document column (the-stack-smol: content)")
    columns: dict | None = help_field(None, "columns: role -> column, e.g. {user: instruction, assistant: output}")
    system_prompt: str | None = help_field(None, "gsm8k/prompt_completion/columns: a fixed system message")
    serialize: Literal["json"] | None = help_field(
        None, "prompt_completion: json writes a prompt or completion that is a JSON object or list with json.dumps"
    )
    prefix: str = help_field("", "text put before each user turn (or text document), e.g. 'Write a Python file:\\n'")
    max_samples: int | None = help_field(None, "take at most this many records from this source")
    fraction: float | None = help_field(None, "take this fraction of the records (seeded, after max_samples)")


# The source options each format reads (data/converters.py, data/preference.py); path, name, data_dir, split,
# revision, max_samples and fraction are read for every format. Any other option set on a format that does not read
# it is refused (config/load.py): it would change nothing.
FORMAT_OPTIONS = {
    "messages_field": ("messages", "sharegpt"),
    "role_field": ("messages", "preference"),
    "content_field": ("messages", "preference"),
    "prompt_field": ("prompt_completion", "preference"),
    "completion_field": ("prompt_completion",),
    "text_field": ("text",),
    "columns": ("columns",),
    "system_prompt": ("gsm8k", "prompt_completion", "columns", "preference"),
    "serialize": ("prompt_completion",),
    "prefix": ("gsm8k", "prompt_completion", "columns", "text"),
}


def unread_option(src: SourceConfig) -> str | None:
    """One line for the first option `src` sets (away from its default) that its format does not read, else None."""
    defaults = SourceConfig(path="")
    for key, readers in FORMAT_OPTIONS.items():
        if src.format not in readers and getattr(src, key) != getattr(defaults, key):
            return f"{key}: format '{src.format}' does not read it; it applies to format {', '.join(readers)}"
    return None


@dataclass
class DataConfig:
    sources: list[SourceConfig] = help_field([], "where the conversations come from")
    seq_len: int = help_field(2048, "tokens per packed row")
    packing: Literal["bfd", "wrapped", "none"] = help_field(
        "bfd", "bfd: best-fit-decreasing bins; wrapped: concat+split; none: one document a row"
    )
    overflow: Literal["split", "truncate", "drop"] = help_field(
        "split",
        "documents longer than seq_len: split (conversations at turn boundaries, with context), truncate, or drop",
    )
    loss_on: Literal["assistant", "all"] = help_field("assistant", "which tokens carry loss")
    on_invalid: Literal["skip", "error"] = help_field(
        "skip", "invalid records: skip and count, or stop at the first one"
    )
    eval_fraction: float = help_field(0.0, "fraction of documents held out for eval (split before packing)")
    store: str = help_field("prepared", "root directory of the content-addressed store")
    num_proc: int | None = help_field(None, "tokenizer worker processes; default all cores")
    num_shards: int | None = help_field(None, "Arrow shards per split; default from size")
    seed: int = help_field(0, "seed for the eval split and shuffles")


@dataclass
class WandbConfig:
    project: str = help_field("smoldist", "W&B project")
    entity: str | None = help_field(None, "W&B entity (team or user)")
    group: str | None = help_field(None, "W&B group; defaults to the recipe name")
    name: str | None = help_field(None, "W&B run name")
    tags: list[str] = help_field([], "W&B tags")
    mode: Literal["auto", "online", "offline", "disabled"] = help_field(
        "auto", "auto: online if logged in, else offline"
    )


@dataclass
class EndEvalConfig:
    data: str = help_field(
        help="questions with gold answers (jsonl/json/parquet), scored after training (docs/eval.md)"
    )
    format: Literal["gsm8k"] = help_field("gsm8k", "how to read questions and gold answers")
    n: int | None = help_field(None, "score only the first n questions")
    batch_size: int = help_field(8, "questions generated at once")
    max_new_tokens: int = help_field(256, "longest answer")
    samples: int = help_field(20, "answers shown in the W&B table")
    compare: bool = help_field(
        False, "also score the model the run started from, log both and the verdict (docs/eval.md)"
    )


@dataclass
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig, metadata={"help": "Weights & Biases settings"})
    eval: EndEvalConfig | None = help_field(None, "score the saved model at the end of training; logged to W&B")
    peak_tflops: float | None = help_field(
        None, "peak TFLOP/s per device for MFU; default: a table of known GPUs (none on CPU)"
    )


# Keys of `train` that are smoldist's own, not SFTConfig's.
OWN_TRAIN_KEYS = {
    "global_batch_tokens": (
        int,
        "tokens per optimiser step across all processes; gradient accumulation is derived from it",
    ),
}


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: dict = field(default_factory=dict)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    method: str = "sft"  # sft | dpo (config/dpo.py)
    dpo: Any = None  # config/dpo.py: DpoConfig, for method dpo
    name: str = "recipe"  # from the file name; not a YAML key
    base_dir: str = "."  # directory the recipe was read from; not a YAML key

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("name"), d.pop("base_dir")
        if self.method == "sft":  # an SFT recipe writes what it wrote before DPO existed (run identities stay)
            d.pop("method"), d.pop("dpo")
        return d


SECTIONS = {"model": ModelConfig, "data": DataConfig, "tracking": TrackingConfig}


def resolve_path(path: str | None) -> str | None:
    """`pkg:` paths point into the package; everything else is as the recipe holds it (config/paths.py anchored
    relative paths when it loaded)."""
    if path is None:
        return None
    if path.startswith(PKG_PREFIX):
        return str(PACKAGE_DIR / path[len(PKG_PREFIX) :])
    return path
