"""The recipe: one YAML with sections model, data, train, tracking, loaded into typed dataclasses.

    recipe = load_recipe("launch/smollm2-135m/smoltalk.yaml", ["data.seq_len=4096", "train.learning_rate=1e-4"])

Overrides are `section.key=value` (list items by index: `data.sources.0.path=x.jsonl`), typed by the
field they set. Unknown keys anywhere fail with their full path and the closest valid name. `train`
is passed to `trl.SFTConfig`; its keys are checked against SFTConfig's own fields (smoldist/train_keys.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from smoldist.errors import RecipeError

PACKAGE_DIR = Path(__file__).resolve().parent


class RecipeLoader(yaml.SafeLoader):
    """YAML with 1.2 booleans: only true/false, so `eval_strategy: no` stays the string 'no'."""


RecipeLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse_yaml(text: str):
    return yaml.load(text, Loader=RecipeLoader)
PKG_PREFIX = "pkg:"  # `pkg:demo/x` names a file shipped inside the smoldist package


def help_field(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field whose help string is shown by `smoldist recipe-help` and in errors."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class LoraConfig:
    r: int = help_field(16, "rank of the low-rank update")
    alpha: int = help_field(32, "scaling numerator: the update is scaled by alpha / r")
    dropout: float = help_field(0.05, "dropout on the LoRA input")
    target_modules: str | list[str] = help_field("all-linear", "all-linear (every linear layer but the LM head) or a list of module names")


@dataclass
class ModelConfig:
    name_or_path: str | None = help_field(None, "hub id or local directory of a pretrained model")
    init: dict | None = help_field(None, "architecture dict (LlamaConfig keys): random init instead of loading weights")
    tokenizer: str | None = help_field(None, "tokenizer hub id or directory; defaults to name_or_path")
    chat_template: str = help_field("smollm2", "bundled template name (smollm2) or a path to a .jinja file")
    default_system_prompt: bool = help_field(True, "smollm2: insert SmolLM's default system prompt when a conversation has none")
    dtype: Literal["bfloat16", "float16", "float32"] = help_field(
        "bfloat16", "compute dtype (autocast) and the dtype the final model is saved in; parameters stay fp32 (master_weights)")
    master_weights: Literal["float32", "none"] = help_field(
        "float32", "float32: parameters and optimizer state in fp32 under `dtype` autocast; none: pure `dtype` weights (warns)")
    attn_implementation: Literal["varlen", "flex_attention", "sdpa", "eager", "flash_attention_2", "flash_attention_3"] = help_field(
        "sdpa", "varlen: torch's varlen FlashAttention, packed rows without a T x T mask (see docs/performance.md)")
    revision: str | None = help_field(None, "hub revision (branch, tag or commit) of the model")
    seed: int = help_field(0, "seed for random init")
    lora: LoraConfig | None = help_field(None, "LoRA adapter settings (see docs/lora.md); null = full fine-tuning")


@dataclass
class SourceConfig:
    path: str = help_field(help="hub id, local .jsonl/.json/.parquet file or glob, or a saved dataset directory")
    format: Literal["messages", "sharegpt", "gsm8k", "prompt_completion", "columns", "text"] = help_field(
        "messages", "how records become conversations (text: plain documents, loss on all tokens)")
    name: str | None = help_field(None, "hub dataset config name (e.g. smoltalk's 'all')")
    data_dir: str | None = help_field(None, "hub dataset sub-directory (the-stack-smol: data/python)")
    split: str = help_field("train", "split to read")
    revision: str | None = help_field(None, "hub dataset revision; pins the store key")
    messages_field: str | None = help_field(None, "messages/sharegpt: column with the turns (default messages / conversations)")
    role_field: str = help_field("role", "messages: key of a turn's role")
    content_field: str = help_field("content", "messages: key of a turn's text")
    prompt_field: str = help_field("prompt", "prompt_completion: the prompt column")
    completion_field: str = help_field("completion", "prompt_completion: the completion column")
    text_field: str = help_field("text", "text: the document column (the-stack-smol: content)")
    columns: dict | None = help_field(None, "columns: role -> column, e.g. {user: instruction, assistant: output}")
    system_prompt: str | None = help_field(None, "gsm8k/prompt_completion/columns: a fixed system message")
    prefix: str = help_field("", "text put before each user turn (or text document), e.g. 'Write a Python file:\\n'")
    max_samples: int | None = help_field(None, "take at most this many records from this source")
    fraction: float | None = help_field(None, "take this fraction of the records (seeded, after max_samples)")


@dataclass
class DataConfig:
    sources: list[SourceConfig] = help_field([], "where the conversations come from")
    seq_len: int = help_field(2048, "tokens per packed row")
    packing: Literal["bfd", "wrapped", "none"] = help_field("bfd", "bfd: best-fit-decreasing bins; wrapped: concat+split; none: one document a row")
    overflow: Literal["split", "truncate", "drop"] = help_field("split", "documents longer than seq_len: split into chunks, truncate, or drop (always counted)")
    loss_on: Literal["assistant", "all"] = help_field("assistant", "which tokens carry loss")
    on_invalid: Literal["skip", "error"] = help_field("skip", "invalid records: skip and count, or stop at the first one")
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
    mode: Literal["auto", "online", "offline", "disabled"] = help_field("auto", "auto: online if logged in, else offline")


@dataclass
class EndEvalConfig:
    data: str = help_field(help="questions with gold answers (jsonl/json/parquet), scored after training (docs/eval.md)")
    format: Literal["gsm8k"] = help_field("gsm8k", "how to read questions and gold answers")
    n: int | None = help_field(None, "score only the first n questions")
    batch_size: int = help_field(8, "questions generated at once")
    max_new_tokens: int = help_field(256, "longest answer")
    samples: int = help_field(20, "answers shown in the W&B table")
    compare: bool = help_field(False, "also score the model the run started from, log both and the verdict (docs/eval.md)")


@dataclass
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig, metadata={"help": "Weights & Biases settings"})
    eval: EndEvalConfig | None = help_field(None, "score the saved model at the end of training; logged to W&B")
    peak_tflops: float | None = help_field(None, "peak TFLOP/s per device for MFU; default: a table of known GPUs (none on CPU)")


# smoldist derives these SFTConfig keys from the data section; setting them in `train` would contradict it.
DERIVED_TRAIN_KEYS = {
    "max_length": "data.seq_len",
    "packing": "data.packing",
    "packing_strategy": "data.packing",
    "padding_free": "data.packing",
    "assistant_only_loss": "data.loss_on",
    "completion_only_loss": "data.loss_on",
    "dataset_kwargs": "the prepared store",
    "dataset_text_field": "the prepared store",
    "gradient_accumulation_steps": "train.global_batch_tokens (or leave global_batch_tokens out)",
}
# Keys of `train` that are smoldist's own, not SFTConfig's.
OWN_TRAIN_KEYS = {
    "global_batch_tokens": (int, "tokens per optimiser step across all processes; gradient accumulation is derived from it"),
}


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: dict = field(default_factory=dict)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    name: str = "recipe"  # from the file name; not a YAML key
    base_dir: str = "."  # directory the recipe was read from; not a YAML key

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("name"), d.pop("base_dir")
        return d


SECTIONS = {"model": ModelConfig, "data": DataConfig, "tracking": TrackingConfig}


def closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(sorted(valid))}"


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else Union[tuple(args)]), len(args) < len(typing.get_args(tp))
    return tp, False


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Check (and for strings from the command line, convert) `value` to the annotated type `tp`."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise RecipeError(f"{path}: must not be empty (expected {getattr(tp, '__name__', tp)})")
    origin = typing.get_origin(tp)
    if tp is Any or tp is typing.Any:
        return value
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise RecipeError(f"{path}: '{value}' is not one of {', '.join(map(str, choices))}")
        return value
    if origin is Union:  # several non-None types: take the first that fits
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg, path)
            except RecipeError:
                pass
        raise RecipeError(f"{path}: {value!r} does not fit {tp}")
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        return [coerce(v, item_tp, f"{path}.{i}") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path)
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise RecipeError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and not value.lstrip("-").isdigit()):
            raise RecipeError(f"{path}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise RecipeError(f"{path}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise RecipeError(f"{path}: expected a string, got {type(value).__name__}")
        return str(value)
    # An SFTConfig field whose annotation we do not model (enums, callables): let SFTConfig judge it.
    return value


def build_dataclass(cls: type, raw: Any, path: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping of keys, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise RecipeError(f"unknown key '{path}.{key}'{closest(str(key), names)}")
        kwargs[key] = coerce(value, hints[key], f"{path}.{key}")
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RecipeError(f"{path}: missing required key '{missing[0]}' ({cls.__dataclass_fields__[missing[0]].metadata.get('help', '')})")
    return cls(**kwargs)


def build_train_section(raw: Any) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(f"train: expected a mapping of SFTConfig keys, got {type(raw).__name__}")
    from smoldist.train_keys import sft_field_types  # SFTConfig's fields without importing trl/torch (4 s)

    hints = sft_field_types()
    valid = sorted(set(hints) | set(OWN_TRAIN_KEYS))
    out = {}
    for key, value in raw.items():
        if key in DERIVED_TRAIN_KEYS:
            raise RecipeError(f"train.{key}: set by smoldist from {DERIVED_TRAIN_KEYS[key]}; remove it from the recipe")
        if key in OWN_TRAIN_KEYS:
            out[key] = coerce(value, OWN_TRAIN_KEYS[key][0], f"train.{key}")
        elif key in hints:
            out[key] = coerce(value, hints[key], f"train.{key}")
        else:
            raise RecipeError(f"unknown key 'train.{key}' (not a trl.SFTConfig field){closest(str(key), valid)}")
    return out


def apply_override(tree: dict, override: str) -> None:
    """Set `a.b.0.c=value` inside the raw YAML tree; the value is parsed as YAML, typed later."""
    if "=" not in override:
        raise RecipeError(f"override '{override}': expected section.key=value")
    dotted, text = override.split("=", 1)
    keys = dotted.strip().split(".")
    if len(keys) < 2:
        raise RecipeError(f"override '{override}': expected section.key=value (e.g. data.seq_len=4096)")
    value = parse_yaml(text) if text.strip() else None
    node: Any = tree
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise RecipeError(f"override '{override}': {'.'.join(keys[:i])} has {len(node)} items; '{key}' is not an index")
            node = node[int(key)]
        else:
            if node.get(key) is None:  # absent or null (`lora: null`): a nested override creates the mapping
                node[key] = {}
            node = node[key]
    last = keys[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise RecipeError(f"override '{override}': '{last}' is not an index of a {len(node)}-item list")
        node[int(last)] = value
    else:
        node[last] = value


def build_recipe(raw: dict, name: str = "recipe", base_dir: str = ".") -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe must be a mapping with sections model, data, train, tracking; got {type(raw).__name__}")
    valid = [*SECTIONS, "train"]
    for key in raw:
        if key not in valid:
            raise RecipeError(f"unknown section '{key}'{closest(str(key), valid)}")
    parts = {key: build_dataclass(cls, raw.get(key), key) for key, cls in SECTIONS.items()}
    recipe = Recipe(train=build_train_section(raw.get("train")), name=name, base_dir=base_dir, **parts)
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    m, d = recipe.model, recipe.data
    if not m.name_or_path and not m.init:
        raise RecipeError("model: set model.name_or_path (hub id or directory) or model.init (architecture dict)")
    if m.lora is not None and m.init:
        raise RecipeError("model.lora: needs a pretrained base (model.name_or_path), not model.init: "
                          "an adapter over random weights could not be reloaded")
    if m.lora is not None and (m.lora.r <= 0 or m.lora.alpha <= 0 or not 0.0 <= m.lora.dropout < 1.0):
        raise RecipeError(f"model.lora: r ({m.lora.r}) and alpha ({m.lora.alpha}) must be positive, dropout ({m.lora.dropout}) in [0, 1)")
    if m.init and not (m.tokenizer or m.name_or_path):
        raise RecipeError("model.tokenizer: required with model.init (no pretrained model to take a tokenizer from)")
    if not d.sources:
        raise RecipeError("data.sources: at least one source is required")
    for i, src in enumerate(d.sources):
        if src.fraction is not None and not 0.0 < src.fraction <= 1.0:
            raise RecipeError(f"data.sources.{i}.fraction: {src.fraction} must be in (0, 1]")
        if src.format == "columns" and not src.columns:
            raise RecipeError(f"data.sources.{i}.columns: format 'columns' needs a mapping of role -> column")
        if src.columns and set(src.columns) - {"system", "user", "assistant"}:
            bad = sorted(set(src.columns) - {"system", "user", "assistant"})
            raise RecipeError(f"data.sources.{i}.columns: unknown role '{bad[0]}'; valid: system, user, assistant")
    if d.seq_len < 8:
        raise RecipeError(f"data.seq_len: {d.seq_len} is too small (at least 8)")
    if not 0.0 <= d.eval_fraction < 1.0:
        raise RecipeError(f"data.eval_fraction: {d.eval_fraction} must be in [0, 1)")
    gbt = recipe.train.get("global_batch_tokens")
    if gbt is not None and gbt <= 0:
        raise RecipeError(f"train.global_batch_tokens: {gbt} must be positive")


def resolve_path(path: str | None, base_dir: str = ".") -> str | None:
    """`pkg:` paths point into the package; everything else is as the user wrote it (relative to CWD)."""
    if path is None:
        return None
    if path.startswith(PKG_PREFIX):
        return str(PACKAGE_DIR / path[len(PKG_PREFIX):])
    return path


DEMO_RECIPE = PACKAGE_DIR / "demo" / "demo.yaml"


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file (the bundled demo when `path` is None) and apply CLI overrides."""
    path = Path(path) if path else DEMO_RECIPE
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        raw = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    for override in overrides:
        apply_override(raw, override)
    name = "demo" if path == DEMO_RECIPE else f"{path.resolve().parent.name}-{path.stem}"
    return build_recipe(raw, name=name, base_dir=str(path.parent))


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
