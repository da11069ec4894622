"""The system prompt a store's conversations were trained with, carried into the saved model's template.

When every conversation had the same system prompt (a source's `system_prompt`, or one written in the data), the
template saved with the model inserts it when a conversation has none, so `smoldist chat`, `smoldist eval` and plain
transformers users ask the model as training did. Conversations without one trained with the template's own default
(SmolLM's prompt under `smollm2`), which the saved template already has. Different prompts: none is made the default,
and the summary says so.
"""

from __future__ import annotations

from smoldist.data.templates import BUNDLED, inserted_system, with_default_system


def system_prompt_summary(counts: list) -> dict:
    """{"prompt": the one prompt every conversation trained with (None: the template's own), "mixed": bool, "seen"}."""
    seen: list = []
    for c in counts:
        seen += [p for p in c.system_prompts if p not in seen]
    return {"prompt": seen[0] if len(seen) == 1 else None, "mixed": len(seen) > 1, "seen": seen[:2]}


def saved_template(template: str, manifest: dict) -> str:
    """The template the trained model is saved with: `template`, inserting the one trained system prompt if any."""
    summary = manifest.get("counts", {}).get("system_prompt") or {}
    return with_default_system(template, summary["prompt"]) if summary.get("prompt") else template


def mixed_prompts_line(summary: dict) -> str | None:
    if not summary.get("mixed"):
        return None
    seen = ", ".join(repr(p) if p is not None else "the template's default" for p in summary["seen"])
    return (
        f"the conversations trained with different system prompts ({seen}, ...): the saved template makes none of "
        "them its default; give the one you want at chat and eval (smoldist chat --system)"
    )


def started_prompt_line(chat_template: str, template: str) -> str | None:
    """A line when the recipe's bundled template was taken with the start model's trained system prompt (data/
    templates' `started_from_default`: a bundled template never opens with an inserted prompt)."""
    prompt = inserted_system(template) if chat_template in BUNDLED else None
    if prompt is None:
        return None
    return (
        f"the start model was trained with the system prompt {prompt!r} (its saved template inserts it): this run "
        "asks conversations without a system turn with it, and saves it as the default unless its own data had one"
    )
