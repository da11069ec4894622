"""Rendering conversations to text plus the character spans that carry loss.

Any template renders through transformers' `render_jinja_template` (the code behind
`apply_chat_template`). The bundled smollm2 template also has a direct Python renderer, 50x faster;
tests/data/test_templates.py proves it gives the same text and spans as jinja.
"""

from __future__ import annotations

from collections.abc import Callable

from smoldist.data.templates import load_template

Spans = list[tuple[int, int]]
Renderer = Callable[..., tuple[list[str], list[Spans]]]  # (conversations, tools per conversation or None)
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


def by_tools(call, conversations: list[list[dict]], tools: list | None) -> tuple[list, list]:
    """`call(conversations, tools)` for runs of consecutive conversations with the same tools (render_jinja_template
    takes one `tools=` for all it renders), the results concatenated in order."""
    if tools is None or all(t is None for t in tools):
        return call(conversations, None)
    texts, spans, i = [], [], 0
    while i < len(conversations):
        j = i + 1
        while j < len(conversations) and tools[j] == tools[i]:
            j += 1
        t, s = call(conversations[i:j], tools[i])
        texts += t
        spans += s
        i = j
    return texts, spans


def render_with_jinja(template: str, template_kwargs: dict) -> Renderer:
    def render_run(conversations, tools):
        from transformers.utils.chat_template_utils import render_jinja_template

        return render_jinja_template(
            conversations=conversations,
            tools=tools,
            chat_template=template,
            return_assistant_tokens_mask=True,
            **template_kwargs,
        )

    return lambda conversations, tools=None: by_tools(render_run, conversations, tools)


def render_texts(
    template: str, conversations: list[list[dict]], generation_prompt: bool, kwargs: dict, tools: list | None = None
) -> list[str]:
    """The template's text for each conversation, exactly as `apply_chat_template(tokenize=False, tools=...)` writes
    it; `tools`: per conversation, or None."""
    from transformers.utils.chat_template_utils import render_jinja_template

    def render_run(convs, run_tools):
        out = render_jinja_template(
            conversations=convs,
            tools=run_tools,
            chat_template=template,
            add_generation_prompt=generation_prompt,
            **kwargs,
        )[0]
        return out, [None] * len(out)

    return by_tools(render_run, conversations, tools)[0] if conversations else []


def uses_tools(conversations: list[list[dict]], tools: list | None) -> bool:
    """Whether any conversation has tools, a tool call or a tool turn: the direct smollm2 renderer has none of them."""
    return any(t is not None for t in tools or []) or any(
        m["role"] == "tool" or "tool_calls" in m for msgs in conversations for m in msgs
    )


def make_renderer(template: str, template_kwargs: dict) -> Renderer:
    jinja = render_with_jinja(template, template_kwargs)
    for default_system in (True, False):
        if template == load_template("smollm2", default_system):

            def fast(convs, tools=None, d=default_system):
                return jinja(convs, tools) if uses_tools(convs, tools) else render_smollm2(convs, d)

            return fast
    return jinja
