"""Preference pairs (`format: preference`): a record -> (prompt, chosen, rejected) -> two token sequences.

TRL's preference formats are read: `prompt` (messages or a string) with `chosen` and `rejected` (assistant messages
or strings), and the implicit-prompt form, where `chosen` and `rejected` are whole conversations sharing a prefix
(TRL's `extract_prompt` rule: the prompt is their longest common run of turns). A record's `tools` is refused
(`unsupported_key`: the schemas would change what the model sees); other extra fields are ignored and listed.

Each side is rendered with the recipe's template as prompt + completion; only the completion's assistant tokens are
scored, through the end-of-turn token, and the sequence ends there. The prompt alone must render to a prefix of both
(`prompt_not_prefix` otherwise), so both sequences start with the same prompt tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from smoldist.data.converters import TOOLS_FIELD, InvalidRecord, check_conversation, field, system_first
from smoldist.data.encode import IGNORE, EncodedBatch, Encoder, span_mask
from smoldist.data.turns import check_tools, message


@dataclass
class Pair:
    """A preference record as conversations: the shared prompt, and the two completions."""

    prompt: list[dict]
    chosen: list[dict]
    rejected: list[dict]
    ignored: tuple[str, ...] = ()  # the record's fields outside prompt/chosen/rejected are listed by records.py

    @property
    def messages(self) -> list[dict]:
        """The prompt: where the conversation's system turn is (records.py records it for the saved template)."""
        return self.prompt


def as_turns(value: Any, name: str, role: str, ignored: set, keys: tuple = ("role", "content")) -> list[dict]:
    """A string is one `role` turn; a list is turns read as data/turns.py reads a conversation's (content parts
    joined, turn-changing keys refused, other keys counted in `ignored`; `keys`: the source's role and content
    keys); weights and tool calls are refused."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if not isinstance(value, list):
        raise InvalidRecord("wrong_type", f"field '{name}' is a {type(value).__name__}, expected a string or a list")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise InvalidRecord("wrong_type", f"{name}[{i}] is a {type(m).__name__}, not an object")
        for k in keys:
            if k not in m:
                raise InvalidRecord("missing_field", f"{name}[{i}] has no '{k}'")
        msg, trained = message(m, i, name, *keys, None, ignored)
        if not trained:  # a pair scores its whole completion: a turn left out of it has no meaning here
            raise InvalidRecord("bad_weight", f"{name}[{i}] has weight 0: preference pairs score whole completions")
        if "tool_calls" in msg or msg["role"] == "tool":
            raise InvalidRecord("unsupported_key", f"{name}[{i}]: tool calls in preference pairs are not supported")
        out.append(msg)
    return out


def split_implicit(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """TRL's `extract_prompt`: the longest common run of turns is the prompt, the rest of each the completion."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def convert_preference(record: Any, opts: Any, loss_on: str) -> Pair:
    chosen_raw, rejected_raw = field(record, "chosen", (str, list)), field(record, "rejected", (str, list))
    prompt_raw = record.get(opts.prompt_field) if isinstance(record, dict) else None
    if check_tools(record.get(TOOLS_FIELD)):  # SFT renders them into the system turn: here they would be lost
        raise InvalidRecord(
            "unsupported_key", f"field '{TOOLS_FIELD}': tool schemas in preference pairs are not supported; remove them"
        )
    ignored: set = set()  # keys of the turns that are not read: listed in the report, never refused
    keys = (opts.role_field, opts.content_field)  # as a messages source reads them
    # TRL's maybe_extract_prompt: a string prompt beside conversational completions is implicit (ultrafeedback)
    implicit = prompt_raw is None or (isinstance(prompt_raw, str) and isinstance(chosen_raw, list))
    if implicit:
        if not isinstance(chosen_raw, list) or not isinstance(rejected_raw, list):
            field(record, opts.prompt_field, (str, list))  # strings need an explicit prompt: missing_field
        prompt, chosen, rejected = split_implicit(
            as_turns(chosen_raw, "chosen", "assistant", ignored, keys),
            as_turns(rejected_raw, "rejected", "assistant", ignored, keys),
        )
    else:
        prompt = as_turns(prompt_raw, opts.prompt_field, "user", ignored, keys)
        chosen = as_turns(chosen_raw, "chosen", "assistant", ignored, keys)
        rejected = as_turns(rejected_raw, "rejected", "assistant", ignored, keys)
    if not prompt:
        raise InvalidRecord("missing_field", "no prompt: chosen and rejected share no leading turns")
    if chosen == rejected:
        raise InvalidRecord("identical_pair", "chosen and rejected are the same")
    if opts.system_prompt and prompt[0]["role"] != "system":
        prompt = [*system_first(opts), *prompt]
    for name, completion in (("chosen", chosen), ("rejected", rejected)):
        turns = check_conversation([*prompt, *completion], loss_on).messages[len(prompt) :]
        if not any(m["role"] == "assistant" for m in turns):
            raise InvalidRecord("empty_completion", f"{name} has no assistant turn after the prompt")
        if any(m["role"] == "assistant" and not m["content"].strip() for m in turns):
            raise InvalidRecord("empty_completion", f"{name} has an empty assistant turn")
    return Pair(prompt, chosen, rejected, ignored=tuple(sorted(ignored)))


CONVERTERS = {"preference": convert_preference}


@dataclass
class EncodedPairs(EncodedBatch):
    """Pairs as documents (chosen, rejected, chosen, ...) and each pair's prompt length in tokens."""

    prompt_lens: np.ndarray = None  # type: ignore[assignment]
    invalid: list = None  # type: ignore[assignment]  # (pair number, reason, detail) found while encoding

    def head(self, k: int) -> EncodedPairs:
        """The first k pairs."""
        if k >= len(self.prompt_lens):
            return self
        n = int(self.lengths[: 2 * k].sum())
        return EncodedPairs(
            self.ids[:n], self.labels[:n], self.lengths[: 2 * k], prompt_lens=self.prompt_lens[:k], invalid=[]
        )


class PairEncoder:
    """Pairs -> token sequences, with the template renderer and tokenizer of the SFT `Encoder`."""

    def __init__(self, encoder: Encoder):
        self.enc = encoder

    def encode(self, pairs: list[Pair]) -> EncodedPairs:
        convs = [c for p in pairs for c in (p.prompt + p.chosen, p.prompt + p.rejected, p.prompt)]
        texts, spans = self.enc.render(convs) if convs else ([], [])
        full = [t for i, t in enumerate(texts) if i % 3 != 2]
        encs = self.enc.tok.encode_batch(full, add_special_tokens=False) if full else []
        ids_out, lab_out, lengths, prompt_lens, invalid = [], [], [], [], []
        for j in range(len(pairs)):
            prompt_text = texts[3 * j + 2]
            try:
                seqs = [self.sequence(encs[2 * j + s], texts[3 * j + s], spans[3 * j + s], prompt_text) for s in (0, 1)]
            except InvalidRecord as e:
                invalid.append((j, e.reason, e.detail))
                continue
            (c_ids, c_lab, p_c), (r_ids, r_lab, p_r) = seqs
            if p_c != p_r or not np.array_equal(c_ids[:p_c], r_ids[:p_r]):
                invalid.append((j, "prompt_not_prefix", "the prompt tokenizes differently before chosen and rejected"))
                continue
            if np.array_equal(c_ids, r_ids):
                invalid.append((j, "identical_pair", "chosen and rejected give the same tokens"))
                continue
            ids_out += [c_ids, r_ids]
            lab_out += [c_lab, r_lab]
            lengths += [len(c_ids), len(r_ids)]
            prompt_lens.append(p_c)
        cat = lambda xs: np.concatenate(xs).astype(np.int32) if xs else np.zeros(0, np.int32)  # noqa: E731
        return EncodedPairs(
            cat(ids_out),
            cat(lab_out),
            np.asarray(lengths, dtype=np.int64),
            prompt_lens=np.asarray(prompt_lens, dtype=np.int64),
            invalid=invalid,
        )

    def sequence(self, enc, text: str, spans: list, prompt_text: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(ids, labels, prompt tokens) of prompt + completion, scored on the completion's assistant spans only and
        cut after its last scored token (the end of turn)."""
        cut = len(prompt_text)
        if not text.startswith(prompt_text):
            raise InvalidRecord("prompt_not_prefix", "the prompt alone renders differently from the pair's start")
        first = enc.char_to_token(cut)
        if first is None or enc.token_to_chars(first)[0] != cut or first == 0:
            raise InvalidRecord("prompt_not_prefix", "a token straddles the end of the prompt")
        scored = span_mask(enc, [(s, e) for s, e in spans if s >= cut])
        if not scored.any():
            raise InvalidRecord("empty_completion", "the completion has no scored token")
        end = int(np.flatnonzero(scored)[-1]) + 1
        ids = np.asarray(enc.ids[:end], dtype=np.int32)
        labels = np.where(scored[:end], ids, IGNORE).astype(np.int32)
        return ids, labels, first
