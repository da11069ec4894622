"""The bundled smollm2 template renders byte-identically to the stock SmolLM2-Instruct template, and its
generation markers cover exactly each assistant turn's content and <|im_end|>."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.utils.chat_template_utils import render_jinja_template

from smoldist.config import ModelConfig
from smoldist.data.encode import Encoder
from smoldist.data.templates import has_generation_markers, load_template
from smoldist.data.templates.render import make_renderer, render_smollm2, render_with_jinja
from smoldist.data.tokenizer import load_prep_tokenizer
from smoldist.errors import RecipeError

# Written from the spec (and identical to the template in SmolLM2-Instruct's tokenizer_config.json).
STOCK = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
OURS = load_template("smollm2")

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@st.composite
def conversations(draw):
    msgs = [{"role": "system", "content": draw(text)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 6))):
        msgs.append({"role": "user", "content": draw(text)})
        msgs.append({"role": "assistant", "content": draw(text)})
    if draw(st.booleans()):
        msgs = msgs[:-1]  # ends on a user turn
    return msgs


def render(template: str, msgs: list[dict], gen: bool) -> str:
    return render_jinja_template(conversations=[msgs], chat_template=template, add_generation_prompt=gen)[0][0]


@settings(max_examples=300, deadline=None)
@given(msgs=conversations(), default_system=st.booleans())
def test_direct_renderer_equals_jinja_in_text_and_spans(msgs, default_system):
    template = load_template("smollm2", default_system)
    assert render_smollm2([msgs], default_system) == render_with_jinja(template, {})([msgs])
    assert make_renderer(template, {})([msgs]) == render_with_jinja(template, {})([msgs])


def test_user_templates_render_with_jinja():
    custom = OURS.replace("<|im_start|>", "<s>")
    texts, _ = make_renderer(custom, {})([[{"role": "user", "content": "x"}]])
    assert texts[0].startswith("<s>system")


@settings(max_examples=300, deadline=None)
@given(msgs=conversations(), gen=st.booleans())
def test_smollm2_renders_like_the_stock_template(msgs, gen):
    assert render(OURS, msgs, gen) == render(STOCK, msgs, gen)


def test_stock_template_text_and_generation_prompt():
    msgs = [{"role": "user", "content": "Hi"}]
    assert render(OURS, msgs, True) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_default_system_prompt_can_be_dropped():
    plain = load_template("smollm2", default_system_prompt=False)
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert render(plain, msgs, False) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    with_system = [{"role": "system", "content": "S"}, *msgs]
    assert render(plain, with_system, False) == render(STOCK, with_system, False)


def test_masks_decode_to_each_assistant_turn():
    tok = load_prep_tokenizer(ModelConfig(tokenizer="pkg:demo/tokenizer", init={"x": 1}))
    enc = Encoder.for_template(tok, OURS, "assistant")
    rng = random.Random(0)
    alphabet = "abc XYZ 123 ,.!?\n\t éü中文🚀<>#"
    convs = []
    for _ in range(200):
        msgs = [{"role": "system", "content": "sys"}] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 6)):
            for role in ("user", "assistant"):
                msgs.append({"role": role, "content": "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))})
        convs.append(msgs)
    from smoldist.data.converters import Document

    batch = enc.encode([Document(messages=m) for m in convs])
    start = 0
    for msgs, n in zip(convs, batch.lengths.tolist()):
        ids, labels = batch.ids[start : start + n], batch.labels[start : start + n]
        start += n
        trained = [int(t) for t, lab in zip(ids, labels) if lab != -100]
        # the trained runs, split at <|im_end|>, are the assistant turns in order
        im_end = tok.token_to_id("<|im_end|>")
        turns, cur = [], []
        for t in trained:
            cur.append(t)
            if t == im_end:
                turns.append(tok.decode(cur)), cur.clear()
        assert cur == []
        assert turns == [m["content"] + "<|im_end|>" for m in msgs if m["role"] == "assistant"]


def test_template_without_generation_markers_gets_derived_masks(tmp_path):
    """The stock template has no markers: its masks are derived, and equal the bundled template's."""
    path = tmp_path / "stock.jinja"
    path.write_text(STOCK)
    template = load_template(str(path))
    assert template == STOCK and not has_generation_markers(template)
    tok = load_prep_tokenizer(ModelConfig(tokenizer="pkg:demo/tokenizer", init={"x": 1}))
    from smoldist.data.converters import Document

    docs = [
        Document(
            messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello there"},
                {"role": "user", "content": "More"},
                {"role": "assistant", "content": "Sure."},
            ]
        )
    ]
    derived, marked = Encoder.for_template(tok, STOCK, "assistant"), Encoder.for_template(tok, OURS, "assistant")
    assert derived.derived and not marked.derived
    a, b = derived.encode(docs), marked.encode(docs)
    assert a.ids.tolist() == b.ids.tolist() and a.labels.tolist() == b.labels.tolist()


def test_unknown_template_is_refused():
    with pytest.raises(RecipeError, match=r"neither a bundled template \(smollm2, chatml\), 'tokenizer'"):
        load_template("chatml-v9")
