"""Chat templates: bundled by name (`smollm2`) or a user's `.jinja` file, checked for loss masking."""

from __future__ import annotations

import re
from pathlib import Path

from smoldist.config import DataConfig, ModelConfig, resolve_path
from smoldist.errors import RecipeError

TEMPLATE_DIR = Path(__file__).resolve().parent
BUNDLED = {"smollm2": TEMPLATE_DIR / "smollm2.jinja"}
SMOLLM2_DEFAULT_SYSTEM_BLOCK = (
    "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
)
GENERATION_RE = re.compile(r"{%-?\s*generation\s*-?%}")


def load_template(spec: str, default_system_prompt: bool = True) -> str:
    """The exact template string for `model.chat_template` (it is hashed into the store key)."""
    if spec in BUNDLED:
        text = BUNDLED[spec].read_text()
        if not default_system_prompt:
            assert SMOLLM2_DEFAULT_SYSTEM_BLOCK in text, "bundled template lost its system block"
            text = text.replace(SMOLLM2_DEFAULT_SYSTEM_BLOCK, "")
        return text
    path = Path(spec)
    if path.suffix != ".jinja" or not path.is_file():
        raise RecipeError(
            f"model.chat_template: '{spec}' is neither a bundled template ({', '.join(BUNDLED)}) "
            "nor an existing .jinja file"
        )
    if not default_system_prompt:
        raise RecipeError(
            "model.default_system_prompt: false applies to bundled templates only; edit your .jinja file instead"
        )
    return path.read_text()


def has_generation_markers(template: str) -> bool:
    return bool(GENERATION_RE.search(template))


def check_template(template: str, spec: str, loss_on: str) -> None:
    """Refuse, before any work, a template that cannot mark assistant tokens when they alone are trained."""
    if loss_on == "assistant" and not has_generation_markers(template):
        raise RecipeError(
            f"model.chat_template: '{spec}' has no {{% generation %}}...{{% endgeneration %}} markers around assistant "
            "turns, so assistant tokens cannot be masked; add them (see smoldist/data/templates/smollm2.jinja) "
            "or set data.loss_on: all"
        )


def recipe_template(model: ModelConfig, data: DataConfig) -> str:
    """The exact template the recipe trains with, refused now if it cannot mask what `data.loss_on` asks."""
    template = load_template(resolve_path(model.chat_template), model.default_system_prompt)
    if any(s.format != "text" for s in data.sources):
        check_template(template, model.chat_template, data.loss_on)
    return template
