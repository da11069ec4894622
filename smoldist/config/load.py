"""Loading a recipe: one YAML with sections model, data, train, tracking, into typed dataclasses.

    recipe = load_recipe("launch/smollm2-135m/smoltalk.yaml", ["data.seq_len=4096", "train.learning_rate=1e-4"])

Overrides are `section.key=value` (list items by index: `data.sources.0.path=x.jsonl`), typed by the
field they set. Unknown keys anywhere fail with their full path and the closest valid name. `train`
is passed to `trl.SFTConfig`; its keys are checked against SFTConfig's own fields (config/sft_fields.py), and
each is honoured, derived or refused as config/sft_keys.py says.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from smoldist.config.dpo import METHODS, DpoConfig, validate_method
from smoldist.config.habits import flat_config_hint
from smoldist.config.paths import anchor_paths
from smoldist.config.recipe import (
    OWN_TRAIN_KEYS,
    PACKAGE_DIR,
    SECTIONS,
    Recipe,
    resolve_path,
    unread_option,
)
from smoldist.config.sft_fields import sft_choices, sft_field_types
from smoldist.config.sft_keys import AGREEING, DERIVED, REFUSED, report_to_problem
from smoldist.errors import RecipeError


class RecipeLoader(yaml.SafeLoader):
    """YAML with 1.2 booleans: only true/false, so `eval_strategy: no` stays the string 'no'."""


RecipeLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=RecipeLoader)


def closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(sorted(valid))}"


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else Union[tuple(args)]), len(args) < len(typing.get_args(tp))  # noqa: UP007 - built at run time from a tuple
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
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, str))
            or (isinstance(value, str) and not value.lstrip("-").isdigit())
        ):
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
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(
            f"{path}: missing required key '{missing[0]}' "
            f"({cls.__dataclass_fields__[missing[0]].metadata.get('help', '')})"
        )
    return cls(**kwargs)


def build_train_section(raw: Any) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(f"train: expected a mapping of SFTConfig keys, got {type(raw).__name__}")
    hints = sft_field_types()  # SFTConfig's fields without importing trl/torch (4 s)
    choices = sft_choices()  # and the values of its enum-typed ones
    valid = sorted(set(hints) | set(OWN_TRAIN_KEYS))
    out = {}
    for key, value in raw.items():
        if key in DERIVED and key not in AGREEING:
            raise RecipeError(f"train.{key}: set by smoldist from {DERIVED[key]}; remove it from the recipe")
        if key in REFUSED:  # it would do nothing, or contradict the recipe (docs/sft-keys.md)
            raise RecipeError(f"train.{key}: not taken by smoldist; use {REFUSED[key]}")
        if key in OWN_TRAIN_KEYS:
            out[key] = coerce(value, OWN_TRAIN_KEYS[key][0], f"train.{key}")
        elif key in hints:
            out[key] = coerce(value, hints[key], f"train.{key}")
            check_choice(key, out[key], choices.get(key))
        else:
            raise RecipeError(f"unknown key 'train.{key}' (not a trl.SFTConfig field){closest(str(key), valid)}")
    return out


def check_choice(key: str, value: Any, valid: list[str] | None) -> None:
    """An enum-typed SFTConfig value (lr_scheduler_type, eval_strategy, ...) must be one of its values."""
    if valid and isinstance(value, str) and value not in valid:
        match = difflib.get_close_matches(value, valid, n=1, cutoff=0.6)
        hint = f"; did you mean '{match[0]}'?" if match else ""
        raise RecipeError(f"train.{key}: '{value}' is not one of {', '.join(valid)}{hint}")


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
                raise RecipeError(
                    f"override '{override}': {'.'.join(keys[:i])} has {len(node)} items; '{key}' is not an index"
                )
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
        raise RecipeError(
            f"recipe must be a mapping with sections model, data, train, tracking; got {type(raw).__name__}"
        )
    valid = [*SECTIONS, "train", "method", "dpo"]
    unknown = [str(key) for key in raw if key not in valid]
    if unknown and (hint := flat_config_hint(unknown)):  # TRL/axolotl habits: name every key's smoldist spelling
        raise RecipeError(hint)
    if unknown:
        raise RecipeError(f"unknown section '{unknown[0]}'{closest(unknown[0], valid)}")
    parts = {key: build_dataclass(cls, raw.get(key), key) for key, cls in SECTIONS.items()}
    method = coerce(raw.get("method", "sft"), Literal[METHODS], "method")
    dpo = build_dataclass(DpoConfig, raw.get("dpo"), "dpo") if raw.get("dpo") is not None or method == "dpo" else None
    recipe = Recipe(
        train=build_train_section(raw.get("train")), name=name, base_dir=base_dir, method=method, dpo=dpo, **parts
    )
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    m, d = recipe.model, recipe.data
    if not m.name_or_path and not m.init:
        raise RecipeError("model: set model.name_or_path (hub id or directory) or model.init (architecture dict)")
    if m.lora is not None and m.init:
        raise RecipeError(
            "model.lora: needs a pretrained base (model.name_or_path), not model.init: "
            "an adapter over random weights could not be reloaded"
        )
    if m.lora is not None and (m.lora.r <= 0 or m.lora.alpha <= 0 or not 0.0 <= m.lora.dropout < 1.0):
        raise RecipeError(
            f"model.lora: r ({m.lora.r}) and alpha ({m.lora.alpha}) must be positive, "
            f"dropout ({m.lora.dropout}) in [0, 1)"
        )
    if m.init and not (m.tokenizer or m.name_or_path):
        raise RecipeError("model.tokenizer: required with model.init (no pretrained model to take a tokenizer from)")
    if not d.sources:
        raise RecipeError("data.sources: at least one source is required")
    validate_method(recipe.method, recipe.dpo, d)
    for i, src in enumerate(d.sources):
        if src.fraction is not None and not 0.0 < src.fraction <= 1.0:
            raise RecipeError(f"data.sources.{i}.fraction: {src.fraction} must be in (0, 1]")
        unread = unread_option(src)
        if unread:
            raise RecipeError(f"data.sources.{i}.{unread}")
        if src.format == "columns" and not src.columns:
            raise RecipeError(f"data.sources.{i}.columns: format 'columns' needs a mapping of role -> column")
        if src.columns and set(src.columns) - {"system", "user", "assistant"}:
            bad = sorted(set(src.columns) - {"system", "user", "assistant"})
            raise RecipeError(f"data.sources.{i}.columns: unknown role '{bad[0]}'; valid: system, user, assistant")
    if d.seq_len < 8:
        raise RecipeError(f"data.seq_len: {d.seq_len} is too small (at least 8)")
    if not 0.0 <= d.eval_fraction < 1.0:
        raise RecipeError(f"data.eval_fraction: {d.eval_fraction} must be in [0, 1)")
    evaluates = recipe.train.get("eval_strategy", "no")
    if evaluates != "no" and d.eval_fraction == 0:
        raise RecipeError(
            f"train.eval_strategy: '{evaluates}' needs an eval split; set data.eval_fraction > 0 "
            "(e.g. 0.05) or train.eval_strategy=no"
        )
    check_precision_keys(recipe)
    if "report_to" in recipe.train and (problem := report_to_problem(recipe.train["report_to"])):
        raise RecipeError(f"train.report_to: {problem} (W&B: tracking.wandb)")
    gbt = recipe.train.get("global_batch_tokens")
    if gbt is not None and gbt <= 0:
        raise RecipeError(f"train.global_batch_tokens: {gbt} must be positive")
    max_steps, epochs = recipe.train.get("max_steps", -1), recipe.train.get("num_train_epochs", 3.0)
    if max_steps <= 0 and epochs <= 0:  # SFTConfig's defaults; max_steps > 0 wins over epochs
        raise RecipeError(
            f"train.num_train_epochs: {epochs} with train.max_steps {max_steps} trains 0 steps; "
            "set train.max_steps > 0 or train.num_train_epochs > 0"
        )


def check_precision_keys(recipe: Recipe) -> None:
    """train.bf16/fp16 may repeat what model.dtype derives (autocast over fp32 masters), never contradict it: a float32
    recipe under bf16 autocast would train in bf16 and save a config that says float32."""
    m = recipe.model
    for key, dtype in (("bf16", "bfloat16"), ("fp16", "float16")):
        wanted = m.dtype == dtype and m.master_weights == "float32"
        if key in recipe.train and recipe.train[key] != wanted:
            raise RecipeError(
                f"train.{key}: {str(recipe.train[key]).lower()} contradicts model.dtype {m.dtype} (master_weights "
                f"{m.master_weights}), which derives it; leave train.{key} out and set model.dtype "
                f"({'bfloat16: bf16 autocast' if key == 'bf16' else 'float16: fp16 autocast, GPUs only'}; "
                f"float32: none)"
            )


DEMO_RECIPE = PACKAGE_DIR / "demo" / "demo.yaml"


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file (the bundled demo when `path` is None; `pkg:` names one in the package) and apply CLI
    overrides."""
    path = Path(resolve_path(str(path))) if path else DEMO_RECIPE
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        raw = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    anchor_paths(raw, path.resolve().parent)  # the recipe's relative paths are read from its folder
    for override in overrides:
        apply_override(raw, override)
    anchor_paths(raw, Path.cwd())  # an override's, from where the command runs
    name = "demo" if path == DEMO_RECIPE else f"{path.resolve().parent.name}-{path.stem}"
    return build_recipe(raw, name=name, base_dir=str(path.parent))


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
