"""Which attention a run uses: `model.attn_implementation: auto` (the default) picks, per model, the fastest path
that is exact for that model's attention, and every run says in one line what it took and why.

    auto    varlen where every layer attends causally within its document, over the whole document or a sliding
            window (varlen passes the window on); sdpa (eager for a class that refuses sdpa) where the model changes
            the scores in a way varlen does not reproduce (soft-capping, sinks, chunked or bidirectional attention,
            unknown layer types).
    varlen  as asked, refused in one line (naming the config field) where it would not be exact.

varlen runs, by device and dtype (one rule, `varlen_path`): on CUDA in bf16/fp16, torch's varlen FlashAttention kernel;
on CUDA in float32 the kernel would round to bf16, so the exact per-document SDPA path runs in float32 instead; on CPU
(no kernel) the per-document SDPA path, documents of a similar length batched into one call.
"""

from __future__ import annotations

from dataclasses import dataclass

from smoldist.errors import RecipeError

AUTO, VARLEN = "auto", "varlen"
# config fields that change the attention scores in ways varlen does not reproduce: field -> what it does
SCORE_FIELDS = {
    "attn_logit_softcapping": "soft-caps the attention scores",
    "attention_chunk_size": "attends within fixed chunks",
    "use_bidirectional_attention": "attends in both directions",
}
# keywords a model's attention layer passes to the attention function that change the scores: keyword -> config field
SCORE_KEYWORDS = {"softcap": "attn_logit_softcapping", "s_aux": "the model's attention sinks (`sinks`)"}
EXACT_LAYER_TYPES = {"full_attention", "sliding_attention"}
KERNEL, PER_DOCUMENT = "kernel", "per-document SDPA"


@dataclass(frozen=True)
class AttentionChoice:
    asked: str  # the recipe's model.attn_implementation
    name: str  # what transformers gets
    reason: str

    def line(self) -> str:
        via = "auto: " if self.asked == AUTO else ""
        return f"attention {self.name} ({via}{self.reason})"

    def report(self) -> dict:
        return {"asked": self.asked, "chosen": self.name, "reason": self.reason}


def varlen_path(device_type: str, dtype) -> str:
    """How varlen attends on this device in this dtype: the CUDA kernel takes only bf16/fp16, so float32 (and every
    CPU) takes the exact per-document SDPA path."""
    import torch

    return KERNEL if device_type == "cuda" and dtype in (torch.bfloat16, torch.float16) else PER_DOCUMENT


def compute_dtype(dtype: str, device_type: str):
    """The dtype attention computes in for a recipe's model.dtype (autocast over fp32 weights; fp16 only on a GPU)."""
    import torch

    if dtype == "float16" and device_type != "cuda":
        return torch.float32
    return getattr(torch, dtype)


def score_changes(config) -> list[str]:
    """Why varlen would not be exact for this model's config: one 'field=value (what it does)' per reason."""
    text = getattr(config, "get_text_config", lambda: config)()
    found = [f"{k}={getattr(text, k)!r} ({what})" for k, what in SCORE_FIELDS.items() if getattr(text, k, None)]
    other = sorted({t for t in getattr(text, "layer_types", None) or [] if t not in EXACT_LAYER_TYPES})
    if other:
        found.append(f"layer_types has {', '.join(other)} (not causal attention within a document)")
    return found


def dense_fallback(config) -> str:
    """sdpa, or eager for a model class that refuses sdpa (Gemma 2: SDPA cannot soft-cap)."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        return "sdpa"
    return "sdpa" if getattr(cls, "_supports_sdpa", True) else "eager"


def window_of(config) -> int | None:
    """The sliding window this model's local layers use (None: full attention everywhere)."""
    text = getattr(config, "get_text_config", lambda: config)()
    types = getattr(text, "layer_types", None)
    window = getattr(text, "sliding_window", None)
    if types is not None and "sliding_attention" not in types:
        return None
    if getattr(text, "use_sliding_window", True) is False:  # Qwen2: the field is set but off
        return None
    return window


def choose(asked: str, config, device_type: str, dtype: str) -> AttentionChoice:
    """The attention for `config` on `device_type` under a recipe's model.dtype; refuses varlen where not exact."""
    if asked not in (AUTO, VARLEN):
        return AttentionChoice(asked, asked, "as the recipe asks")
    reasons = score_changes(config)
    if reasons and asked == VARLEN:
        raise RecipeError(
            f"model.attn_implementation: varlen is not exact for this model: its config sets {'; '.join(reasons)}; "
            f"use auto or sdpa"
        )
    if reasons:
        fallback = dense_fallback(config)
        return AttentionChoice(asked, fallback, f"varlen is not exact here: {'; '.join(reasons)}")
    window = window_of(config)
    layers = f"full and sliding-window ({window}) attention" if window else "full attention"
    path = varlen_path(device_type, compute_dtype(dtype, device_type))
    if path == KERNEL:
        how = "torch's varlen FlashAttention kernel"
    elif device_type == "cuda":
        how = "the exact per-document SDPA path in float32 (the varlen kernel takes only bf16/fp16)"
    else:
        how = f"per-document SDPA on {device_type} (no varlen kernel), documents of similar length batched"
    return AttentionChoice(asked, VARLEN, f"exact for {layers}, no T x T mask; {how}")
