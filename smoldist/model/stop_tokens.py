"""Stop where a chat turn ends: the saved tokenizer, config.json and generation_config.json name the
template's end-of-turn token, so plain `generate()`, pipelines and servers stop there by themselves.

A base model's tokenizer says eos = `<|endoftext|>`; after a ChatML fine-tune the model ends its turns
with `<|im_end|>` and would run on past it. We make `<|im_end|>` the eos, keep the old eos as a second
stop id in the generation config (plain-text documents still end with it), and keep the pad token
distinct from the end-of-turn token: collators that mask pad positions out of the labels would
otherwise never train the model to stop. `stop_token_ids` is where generation (chat, eval) stops: the same
end-of-turn token, read from the tokenizer's own template.
"""

from __future__ import annotations

from dataclasses import dataclass

SENTINEL = "\x00smoldist-end-of-turn-probe\x00"


def end_of_turn_token(tokenizer, template: str) -> str | None:
    """The special token the template writes right after an assistant message (`<|im_end|>` for ChatML)."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}],
        chat_template=template,
        tokenize=False,
    )
    after = text[text.index(SENTINEL) + len(SENTINEL) :]
    specials = set(tokenizer.all_special_tokens) | {str(t) for t in tokenizer.added_tokens_decoder.values()}
    for token in sorted(specials, key=len, reverse=True):  # longest first: `<|im_end|>` before `<|im`
        if token and after.startswith(token):
            return token
    return None


@dataclass
class StopTokens:
    end_of_turn: str
    previous_eos: str | None
    eos_ids: list[int]  # what generate() stops on: end of turn first, then the tokenizer's old eos
    pad: str | None
    changed: bool


def set_stop_tokens(tokenizer, model, template: str) -> StopTokens | None:
    """Make the end-of-turn token the eos of `tokenizer`, `model.config` and `model.generation_config`."""
    eot = end_of_turn_token(tokenizer, template)
    if eot is None:
        return None
    eot_id = tokenizer.convert_tokens_to_ids(eot)
    old_eos = tokenizer.eos_token
    changed = old_eos != eot
    if changed:
        tokenizer.eos_token = eot
    if tokenizer.pad_token is None or tokenizer.pad_token == eot:
        vocab = tokenizer.get_vocab()
        tokenizer.pad_token = next(
            (t for t in (old_eos, "<|endoftext|>", "<pad>", "<|pad|>") if t and t != eot and t in vocab),
            tokenizer.pad_token,
        )
    eos_ids = [eot_id] + ([tokenizer.convert_tokens_to_ids(old_eos)] if old_eos and old_eos != eot else [])
    model.config.eos_token_id = eot_id
    model.config.pad_token_id = tokenizer.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.eos_token_id = eos_ids if len(eos_ids) > 1 else eot_id
        gen.pad_token_id = tokenizer.pad_token_id
        gen.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else gen.bos_token_id
    return StopTokens(eot, old_eos, eos_ids, tokenizer.pad_token, changed)


def stop_token_ids(tok) -> list[int]:
    """Where generation stops: the chat template's end of turn (`<|im_end|>` for ChatML), and eos."""
    eot = end_of_turn_token(tok, tok.chat_template) if tok.chat_template else None
    stops = [tok.convert_tokens_to_ids(eot)] if eot is not None else []
    if tok.eos_token_id is not None and tok.eos_token_id not in stops:
        stops.append(tok.eos_token_id)
    return stops
