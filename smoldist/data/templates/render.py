"""Rendering conversations to text plus the character spans that carry loss.

Any template renders through transformers' `render_jinja_template` (the code behind
`apply_chat_template`). The bundled smollm2 template also has a direct Python renderer, 50x faster;
tests/data/test_templates.py proves it gives the same text and spans as jinja.
"""

from __future__ import annotations

from collections.abc import Callable

from smoldist.data.templates import load_template

Spans = list[tuple[int, int]]
Renderer = Callable[[list[list[dict]]], tuple[list[str], list[Spans]]]
SMOLLM2_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def render_smollm2(conversations: list[list[dict]], default_system: bool = True) -> tuple[list[str], list[Spans]]:
    texts, all_spans = [], []
    for messages in conversations:
        parts: list[str] = []
        spans: Spans = []
        pos = 0
        if default_system and messages and messages[0]["role"] != "system":
            parts.append(SMOLLM2_SYSTEM)
            pos = len(SMOLLM2_SYSTEM)
        for m in messages:
            if m["role"] == "assistant":
                body = m["content"] + "<|im_end|>"
                parts += ["<|im_start|>assistant\n", body, "\n"]
                start = pos + len("<|im_start|>assistant\n")
                spans.append((start, start + len(body)))
                pos = start + len(body) + 1
            else:
                piece = "<|im_start|>" + m["role"] + "\n" + m["content"] + "<|im_end|>\n"
                parts.append(piece)
                pos += len(piece)
        texts.append("".join(parts))
        all_spans.append(spans)
    return texts, all_spans


def render_with_jinja(template: str, template_kwargs: dict) -> Renderer:
    def render(conversations):
        from transformers.utils.chat_template_utils import render_jinja_template

        return render_jinja_template(
            conversations=conversations, chat_template=template, return_assistant_tokens_mask=True, **template_kwargs
        )

    return render


def render_texts(template: str, conversations: list[list[dict]], generation_prompt: bool, kwargs: dict) -> list[str]:
    """The template's text for each conversation, exactly as `apply_chat_template(tokenize=False)` writes it."""
    from transformers.utils.chat_template_utils import render_jinja_template

    if not conversations:
        return []
    return render_jinja_template(
        conversations=conversations, chat_template=template, add_generation_prompt=generation_prompt, **kwargs
    )[0]


def make_renderer(template: str, template_kwargs: dict) -> Renderer:
    for default_system in (True, False):
        if template == load_template("smollm2", default_system):
            return lambda convs, d=default_system: render_smollm2(convs, d)
    return render_with_jinja(template, template_kwargs)
