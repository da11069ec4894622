"""The end of a chat turn has one source: the template. Training makes it eos; chat and eval stop on it."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from smoldist.data.templates import load_template
from smoldist.model.stop_tokens import end_of_turn_token, stop_token_ids
from tests.helpers import REPO

# ChatML whose assistant turns end with <|endoftext|> instead of <|im_end|>: the template, not a fixed string, decides
ENDOFTEXT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ '<|endoftext|>' }}{% else %}{{ '<|im_end|>' }}{% endif %}{{ '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture
def tok():
    return AutoTokenizer.from_pretrained(REPO / "smoldist" / "demo" / "tokenizer")


def test_chatml_turns_stop_at_im_end_then_eos(tok):
    tok.chat_template = load_template("smollm2")
    tok.eos_token = "<|endoftext|>"  # a base model's eos: generation must still stop at the end of the turn
    assert end_of_turn_token(tok, tok.chat_template) == "<|im_end|>"
    assert stop_token_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]


def test_a_template_that_ends_turns_otherwise_stops_there_and_not_at_im_end(tok):
    tok.chat_template = ENDOFTEXT_TEMPLATE
    assert end_of_turn_token(tok, tok.chat_template) == "<|endoftext|>"
    stops = stop_token_ids(tok)
    assert stops[0] == tok.convert_tokens_to_ids("<|endoftext|>")
    assert stops == [tok.convert_tokens_to_ids("<|endoftext|>"), tok.eos_token_id]  # eos (<|im_end|> here) after it


def test_without_a_template_only_eos_stops(tok):
    tok.chat_template = None
    assert stop_token_ids(tok) == [tok.eos_token_id]
