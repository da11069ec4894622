"""A model's own template without generation markers: assistant masks derived from the template, token-identical to
`apply_chat_template`, and refused (never mis-masked) where the template is not prefix-stable."""

from __future__ import annotations

import random

import pytest

from smoldist.config import DataConfig, ModelConfig
from smoldist.data.converters import Document
from smoldist.data.encode import Encoder
from smoldist.data.templates import load_template, recipe_template
from smoldist.data.tokenizer import load_prep_tokenizer
from smoldist.errors import DataError, RecipeError
from tests.helpers import GEMMA, GEMMA_SPECIALS, LLAMA3, LLAMA3_SPECIALS, assert_exact, family_tokenizer

# DeepSeek-R1-style: reasoning is dropped from every assistant turn but the last one.
DROPS_REASONING = (
    "{% for m in messages %}{% set c = m['content'] %}{% if m['role'] == 'assistant' and not loop.last %}"
    "{% set c = c.split('</think>')[-1] %}{% endif %}{{ '<|im_start|>' + m['role'] + '\n' + c + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
FAMILIES = {
    "llama3": (LLAMA3, LLAMA3_SPECIALS, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "gemma": (GEMMA, GEMMA_SPECIALS, "<bos>", "<eos>", "<end_of_turn>"),
}
ALPHABET = "abc XYZ 123 ,.!?\n\t éü中文🚀<>#"


def conversations(rng: random.Random, n: int, system: bool = True) -> list[list[dict]]:
    out = []
    for _ in range(n):
        msgs = [{"role": "system", "content": "be brief"}] if system and rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 5)):
            for role in ("user", "assistant"):
                msgs.append({"role": role, "content": "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 30)))})
        out.append(msgs)
    return out


def model_cfg(folder) -> ModelConfig:
    return ModelConfig(tokenizer=str(folder), init={"hidden_size": 8}, chat_template="tokenizer")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_own_template_masks_are_exact(tmp_path, family):
    template, specials, bos, eos, eot = FAMILIES[family]
    folder = family_tokenizer(tmp_path / family, template, specials, bos, eos)
    assert recipe_template(model_cfg(folder), DataConfig()) == template
    assert_exact(folder, template, eot, conversations(random.Random(0), 60, system=True))


def test_template_is_read_from_chat_template_jinja_first(tmp_path):
    folder = family_tokenizer(tmp_path / "t", LLAMA3, LLAMA3_SPECIALS, "<|begin_of_text|>", "<|eot_id|>")
    (folder / "chat_template.jinja").write_text(GEMMA)
    assert recipe_template(model_cfg(folder), DataConfig()) == GEMMA


def test_tokenizer_without_template_is_refused(tmp_path):
    folder = family_tokenizer(tmp_path / "t", None, LLAMA3_SPECIALS, "<|begin_of_text|>", "<|eot_id|>")
    with pytest.raises(RecipeError, match="ships no chat template"):
        recipe_template(model_cfg(folder), DataConfig())


def test_template_dropping_earlier_reasoning_is_refused_with_the_record(tmp_path):
    folder = family_tokenizer(tmp_path / "t", DROPS_REASONING, [], "<|im_start|>", "<|im_end|>")
    tok = load_prep_tokenizer(model_cfg(folder))
    enc = Encoder.for_template(tok, DROPS_REASONING, "assistant")
    one_turn = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>hm</think>a"}]
    assert_exact(folder, DROPS_REASONING, "<|im_end|>", [one_turn])  # nothing earlier to rewrite: exact
    two_turns = one_turn + [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(DataError, match=r"'q2'.*not prefix-stable at message 1"):
        enc.encode([Document(messages=two_turns)])


def test_token_merging_across_the_turn_boundary_is_refused(tmp_path):
    # the role is written without a separator: `assist` + a reply starting `ant` tokenizes as one `assistant` token
    glued = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'][:6] + m['content'] + '<|im_end|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assist' }}{% endif %}"
    )
    folder = family_tokenizer(tmp_path / "t", glued, [], "<|im_start|>", "<|im_end|>")
    enc = Encoder.for_template(load_prep_tokenizer(model_cfg(folder)), glued, "assistant")
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ant, sure"}]
    with pytest.raises(DataError, match="a token merges across the assistant turn boundary"):
        enc.encode([Document(messages=msgs)])


def test_end_of_turn_that_is_not_one_token_is_refused(tmp_path):
    plain = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '</s>\n' }}{% endfor %}"
    folder = family_tokenizer(tmp_path / "t", plain, [], "<|im_start|>", "<|im_end|>")
    tok = load_prep_tokenizer(model_cfg(folder))
    with pytest.raises(DataError, match=r"ends an assistant turn with '</s>\\n', not a single token"):
        Encoder.for_template(tok, plain, "assistant")


def test_templates_with_markers_keep_the_fast_path(tmp_path):
    tok = load_prep_tokenizer(ModelConfig(tokenizer="pkg:demo/tokenizer", init={"x": 1}))
    for name in ("smollm2", "chatml"):
        assert not Encoder.for_template(tok, load_template(name), "assistant").derived
    assert not Encoder.for_template(tok, LLAMA3, "all").derived  # every token trained: nothing to derive
