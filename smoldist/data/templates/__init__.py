"""Chat templates: bundled by name (`smollm2`, `chatml`), the model's own (`tokenizer`), or a user's `.jinja` file."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from smoldist.config import DataConfig, ModelConfig, resolve_path
from smoldist.data.tokenizer import tokenizer_dir
from smoldist.errors import RecipeError

TEMPLATE_DIR = Path(__file__).resolve().parent
BUNDLED = {"smollm2": TEMPLATE_DIR / "smollm2.jinja", "chatml": TEMPLATE_DIR / "chatml.jinja"}
FROM_TOKENIZER = "tokenizer"
SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SMOLLM2_DEFAULT_SYSTEM_BLOCK = (
    "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
    + SMOLLM2_SYSTEM_PROMPT
    + "' + tools_text + '<|im_end|>\\n' }}{% endif %}"
)
# Without the default prompt, a conversation with tools and no system turn still gets one holding the tools.
TOOLS_ONLY_SYSTEM_BLOCK = (
    "{% if loop.first and messages[0]['role'] != 'system' and tools %}"
    "{{ '<|im_start|>system\\n' + tools_text[2:] + '<|im_end|>\\n' }}{% endif %}"
)
GENERATION_RE = re.compile(r"{%-?\s*generation\s*-?%}")
BOS_PREFIX = "{{ bos_token }}"


def load_template(spec: str, default_system_prompt: bool = True, bos: bool = False) -> str:
    """The exact template string for `model.chat_template` (it is hashed into the store key). A bundled template
    starts with the BOS token when `bos` (the tokenizer starts every text with one: Gemma, Llama 2; models trained
    so break without it); a model's own template or a user's file is taken as written."""
    if spec in BUNDLED:
        text = BUNDLED[spec].read_text()
        if not default_system_prompt and spec == "smollm2":
            assert SMOLLM2_DEFAULT_SYSTEM_BLOCK in text, "bundled template lost its system block"
            text = text.replace(SMOLLM2_DEFAULT_SYSTEM_BLOCK, TOOLS_ONLY_SYSTEM_BLOCK)
        return BOS_PREFIX + text if bos else text
    path = Path(spec)
    if path.suffix != ".jinja" or not path.is_file():
        raise RecipeError(
            f"model.chat_template: '{spec}' is neither a bundled template ({', '.join(BUNDLED)}), "
            f"'{FROM_TOKENIZER}' (the model's own) nor an existing .jinja file"
        )
    if not default_system_prompt:
        raise RecipeError(
            "model.default_system_prompt: false applies to bundled templates only; edit your .jinja file instead"
        )
    return path.read_text()


# with_default_system's text before and after the prompt's JSON literal: (head, tail)
DEFAULT_SYSTEM_AROUND = (
    "{%- if not messages or messages[0]['role'] != 'system' %}{%- set messages = [{'role': 'system', 'content': ",
    "}] + messages %}{%- endif %}",
)


def with_default_system(template: str, prompt: str) -> str:
    """The template that inserts `prompt` as the system turn when a conversation has none: what a run trained with
    one fixed system prompt saves, so chat, eval and plain transformers users see what training saw."""
    given = json.dumps(prompt, ensure_ascii=False)  # a JSON string is a jinja string literal
    head, tail = DEFAULT_SYSTEM_AROUND
    return head + given + tail + template


def inserted_system(template: str) -> str | None:
    """The prompt a template made by `with_default_system` inserts (it opens with it), else None."""
    head, tail = DEFAULT_SYSTEM_AROUND
    if not template.startswith(head):
        return None
    try:
        prompt, end = json.JSONDecoder().raw_decode(template, len(head))
    except json.JSONDecodeError:
        return None
    return prompt if isinstance(prompt, str) and template.startswith(tail, end) else None


def default_system_of(template: str, base: str) -> str | None:
    """The prompt `template` inserts when it is `with_default_system(base, prompt)` (what a smoldist run trained with
    one fixed system prompt saved), else None."""
    prompt = inserted_system(template)
    return prompt if prompt is not None and with_default_system(base, prompt) == template else None


def has_generation_markers(template: str) -> bool:
    return bool(GENERATION_RE.search(template))


def tokenizer_template(model: ModelConfig) -> str:
    """The template the model's tokenizer ships: chat_template.jinja, else tokenizer_config.json's chat_template."""
    folder = tokenizer_dir(model)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    config = folder / "tokenizer_config.json"
    template = json.loads(config.read_text()).get("chat_template") if config.is_file() else None
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if not isinstance(template, str) or not template:
        raise RecipeError(
            f"model.chat_template: tokenizer: {folder} ships no chat template (no chat_template.jinja, none in "
            "tokenizer_config.json); name a bundled one (chatml for a base model) or a .jinja file"
        )
    return template


@functools.cache  # the bundled files do not change while a process runs
def bundled_templates() -> frozenset[str]:
    """Every text a bundled template can have (with and without BOS, the smollm2 system prompt)."""
    return frozenset(
        load_template(name, system, bos) for name in BUNDLED for system in (True, False) for bos in (True, False)
    )


def recipe_template(model: ModelConfig, data: DataConfig, bos: bool = False) -> str:
    """The exact template the recipe trains with (hashed into the store key whatever its origin); `bos`: the
    tokenizer starts every text with its BOS token (PrepTokenizer.bos_prefix)."""
    if model.chat_template == FROM_TOKENIZER:
        if not model.default_system_prompt:
            raise RecipeError("model.default_system_prompt: false applies to the bundled smollm2 template only")
        return tokenizer_template(model)
    template = load_template(resolve_path(model.chat_template), model.default_system_prompt, bos)
    return started_from_default(model, template) or template


def started_from_default(model: ModelConfig, template: str) -> str | None:
    """The start model's own template when it is `template` with a trained default system prompt inserted (a
    smoldist run's output, store/system_prompt.py): a run continuing that model (DPO after SFT) keeps asking it
    as it was trained. None otherwise; only a local folder is looked at."""
    name = resolve_path(model.tokenizer or model.name_or_path) if (model.tokenizer or model.name_or_path) else None
    if name is None or not Path(name).is_dir():
        return None
    try:
        own = tokenizer_template(model)
    except RecipeError:  # no template of its own: nothing was trained in
        return None
    return own if default_system_of(own, template) is not None else None
