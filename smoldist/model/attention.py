"""Attention on packed (padding-free) rows without a dense T x T mask.

`model.attn_implementation` picks one of CHOICES:
  auto            the default: varlen where it is exact for the model, else sdpa (model/attention_choice.py).
  varlen          torch's built-in varlen FlashAttention (`torch.nn.attention.varlen.varlen_attn`, torch >= 2.10),
                  fed `cu_seqlens`: from TRL's padding-free collator (`cu_seq_lens_q`, `max_length_q`, computed on the
                  CPU from the store's `seq_lengths`), else from `position_ids` (once per forward). A layer's sliding
                  window goes to the kernel. On a device without the kernel (CPU), or in float32, the same segments
                  run through SDPA per document, documents of similar length padded at their end into one call
                  (causal attention never looks at the padding): exact, about O(sum s_i^2).
  flex_attention  transformers' FlexAttention with a document block mask built from `position_ids` (GPU for training:
                  FlexAttention has no backward on CPU).
  sdpa, eager     correct, but a padding-free batch makes transformers build a dense [B, 1, T, T] mask (all T^2 scores):
                  SmoldistTrainer warns once when that happens.
  flash_attention_2, flash_attention_3   the flash-attn packages, where installed.

`register()` adds `varlen` to transformers' AttentionInterface and AttentionMaskInterface (with the mask function of
flash attention: None, or the 2D padding mask when there is padding; never a T x T mask).
"""

from __future__ import annotations

import inspect
import typing
import warnings

import torch

from smoldist.config.batch import device_rows
from smoldist.config.recipe import AttnImplementation
from smoldist.errors import RecipeError
from smoldist.model.attention_choice import KERNEL, SCORE_KEYWORDS, varlen_path

VARLEN = "varlen"
CHOICES = typing.get_args(AttnImplementation)  # the recipe's own list (config/recipe.py)
DENSE_MASK = ("sdpa", "eager")  # build a [B, 1, T, T] mask for padding-free rows
_dense_warned = False


def eval_rows(attn_implementation: str, train_rows: int) -> int:
    """Eval rows per device: one packed row with sdpa/eager (their mask is (rows x seq_len)^2), else as in training."""
    return 1 if attn_implementation in DENSE_MASK else train_rows


def run_eval_rows(attn_implementation: str, train: dict) -> int:
    """A run's eval rows per device (its `train` section): as given, else `eval_rows` of its training rows."""
    return train.get("per_device_eval_batch_size") or eval_rows(attn_implementation, device_rows(train))


def register() -> None:
    """Make `attn_implementation="varlen"` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(VARLEN, varlen_attention_forward)
    AttentionMaskInterface.register(VARLEN, flash_attention_mask)


def check_attn_implementation(name: str, training: bool = True) -> None:
    """A clear error for a name transformers would not take, or a choice that cannot train on this machine."""
    if name not in CHOICES:  # AUTO is among them: resolved to a real name by attention_choice.choose
        raise RecipeError(f"model.attn_implementation: '{name}' is not one of {', '.join(CHOICES)}")
    if name == "flex_attention" and training and not torch.cuda.is_available():
        raise RecipeError(
            "model.attn_implementation: flex_attention has no backward pass on CPU (torch "
            f"{torch.__version__}); train with varlen or sdpa on a machine without a GPU"
        )
    if name.startswith("flash_attention_"):
        import importlib.util

        package = "flash_attn" if name == "flash_attention_2" else "flash_attn_interface"
        if importlib.util.find_spec(package) is None:
            raise RecipeError(
                f"model.attn_implementation: {name} needs the '{package}' package, which is not installed; "
                f"'varlen' is torch's built-in equivalent"
            )


def documents_per_row(inputs: dict) -> int | None:
    """Documents in a padding-free micro-batch (from TRL's collator's cu_seq_lens_q), without a device sync."""
    cu = inputs.get("cu_seq_lens_q")
    return cu.numel() - 1 if torch.is_tensor(cu) else None


def warn_dense_packed(attn_implementation: str, inputs: dict) -> None:
    """Once per process: sdpa/eager meeting packed rows computes (and masks) all T^2 scores."""
    global _dense_warned
    docs = documents_per_row(inputs)
    if _dense_warned or attn_implementation not in DENSE_MASK or not docs or docs < 2:
        return
    _dense_warned = True
    t = inputs["input_ids"].shape[-1]
    warnings.warn(
        f"attn_implementation '{attn_implementation}' on packed rows: transformers builds a dense {t} x {t} "
        f"mask ({t * t / 2**20:,.1f} MiB as bool) and computes all {t}^2 scores for {docs} documents; "
        f"set model.attn_implementation to auto (the default) or varlen to attend within documents only",
        stacklevel=2,
    )


# ---- segments: which tokens form one document, as cu_seqlens over the flattened (unpadded) tokens


def segments_from_positions(
    position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, batch: int, length: int, device
) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """(cu_seqlens int32, max length, index of the kept tokens or None): a document starts at each row start and
    wherever position_ids do not continue by one; padding (attention_mask 0) is dropped."""
    if position_ids is None:
        position_ids = torch.arange(length, device=device).expand(batch, -1)
    pos = position_ids.to(device).expand(batch, -1).reshape(-1)
    row = torch.arange(batch, device=device).repeat_interleave(length)
    index = None
    if attention_mask is not None and not bool(attention_mask.all()):
        index = attention_mask.to(device).reshape(-1).bool().nonzero().flatten()
        pos, row = pos[index], row[index]
    start = torch.ones_like(pos, dtype=torch.bool)
    start[1:] = (row[1:] != row[:-1]) | (pos[1:] != pos[:-1] + 1)
    starts = start.nonzero().flatten()
    cu = torch.cat([starts, starts.new_tensor([pos.numel()])]).to(torch.int32)
    return cu, int(cu.diff().max()) if cu.numel() > 1 else 0, index


_cache: dict = {}  # one forward's segments, shared by its layers (keyed by the identity of the tensors it holds)


def segments(
    kwargs: dict, attention_mask, batch: int, length: int, device
) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    cu = kwargs.get("cu_seq_lens_q")
    if torch.is_tensor(cu) and attention_mask is None and batch == 1 and kwargs.get("max_length_q") is not None:
        return cu.to(device=device, dtype=torch.int32), int(kwargs["max_length_q"]), None  # TRL's collator: no sync
    position_ids = kwargs.get("position_ids")
    if torch.compiler.is_compiling():
        return segments_from_positions(position_ids, attention_mask, batch, length, device)
    refs = _cache.get("refs")
    if (
        refs is None
        or refs[0] is not position_ids
        or refs[1] is not attention_mask
        or _cache["shape"] != (batch, length)
    ):
        _cache.update(
            refs=(position_ids, attention_mask),
            shape=(batch, length),
            value=segments_from_positions(position_ids, attention_mask, batch, length, device),
        )
    return _cache["value"]


# ---- the attention function transformers calls (query/key/value: [B, H, T, D]; returns [B, T, H, D])

_kernel: tuple = ()  # (varlen_attn, its keyword names), looked up once


def _varlen_kernel():
    global _kernel
    if not _kernel:
        from torch.nn.attention.varlen import varlen_attn

        _kernel = (varlen_attn, frozenset(inspect.signature(varlen_attn).parameters))
    return _kernel


def _kernel_attention(q, k, v, cu, max_len, scale, window: int | None):
    """torch's varlen FlashAttention (CUDA, fp16/bf16), causal within each segment, over the last `window` keys when
    given (transformers' rule kv > q - W: W - 1 keys back). Its keywords changed across torch versions (2.10:
    is_causal, no scale, window or GQA; 2.13: window_size, scale, enable_gqa): take what is there."""
    varlen_attn, params = _varlen_kernel()
    left = window - 1 if window else -1
    if "window_size" in params:
        kw = {"window_size": (left, 0)}
    elif window:
        raise RecipeError(
            f"model.attn_implementation: this torch's varlen_attn has no window_size, and the model's layers use "
            f"sliding_window={window}; use attn_implementation sdpa, or torch >= 2.13"
        )
    else:
        kw = {"is_causal": True}
    if "scale" in params:
        kw["scale"] = scale
    elif scale is not None and abs(scale * q.shape[-1] ** 0.5 - 1) > 1e-6:  # its fixed scale is 1/sqrt(d): fold into q
        q = q * (scale * q.shape[-1] ** 0.5)
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
        else:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return varlen_attn(q, k, v, cu, cu, max_len, max_len, **kw)


# ---- the per-document path: documents of similar length, each padded at its end to the group's longest, go through
# one SDPA call. Causal attention never lets a real query see a later (padding) key, so the real outputs are exact.

PAD_SLACK = 1.5  # a group's padded score work may be this much above its documents' own (fewer, larger SDPA calls)
_plans: dict = {}  # one forward's grouping, shared by its layers (keyed by the segment boundaries)


def document_groups(lengths: list[int], slack: float = PAD_SLACK) -> list[list[int]]:
    """Document indices grouped for one SDPA call each: longest first, a group takes the next document while
    padding all of its members to the group's longest costs at most `slack` x their own causal score work."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    own = 0
    for i in order:
        s = lengths[i]
        if groups:
            longest = lengths[groups[-1][0]]
            if (len(groups[-1]) + 1) * longest * longest <= slack * (own + s * s):
                groups[-1].append(i)
                own += s * s
                continue
        groups.append([i])
        own = s * s
    return groups


def _plan(cu: torch.Tensor, device) -> list:
    """Per group: (gather index [n, L] into the flat tokens, which of its n x L slots are real, its length L);
    and the permutation that puts the groups' real outputs back in token order."""
    if _plans.get("cu") is cu and _plans.get("device") == device:  # the next layer of the same forward
        return _plans["value"]
    bounds = cu.tolist()
    key = (tuple(bounds), device)
    if _plans.get("key") == key:
        _plans["cu"] = cu
        return _plans["value"]
    starts, lengths = bounds[:-1], [e - s for s, e in zip(bounds[:-1], bounds[1:])]
    groups, order = [], []
    for members in document_groups(lengths):
        longest = lengths[members[0]]
        start = torch.tensor([starts[i] for i in members])[:, None]
        length = torch.tensor([lengths[i] for i in members])[:, None]
        offset = torch.arange(longest)[None, :]
        real = offset < length
        gather = start + torch.minimum(offset, length - 1)  # padding repeats the document's last token
        groups.append((gather.to(device), real.flatten().nonzero().flatten().to(device), longest))
        order.append(gather[real])
    back = torch.argsort(torch.cat(order)).to(device)
    _plans.update(cu=cu, device=device, key=key, value=(groups, back))
    return _plans["value"]


def _window_mask(length: int, window: int | None, device) -> torch.Tensor | None:
    """None (plain causal) when the window covers the group, else transformers' rule: q - W < kv <= q."""
    if not window or window >= length:
        return None
    q = torch.arange(length, device=device)[:, None]
    kv = torch.arange(length, device=device)[None, :]
    return (kv <= q) & (kv > q - window)


def _reference_attention(q, k, v, cu, scale, window: int | None = None):
    """The same segments through SDPA, documents grouped (devices without the varlen kernel, and float32)."""
    groups, back = _plan(cu, q.device)
    gqa = q.shape[1] != k.shape[1]
    outs = []
    for gather, real, longest in groups:
        qs, ks, vs = (x[gather].permute(0, 2, 1, 3) for x in (q, k, v))  # [n, H, L, D]
        mask = _window_mask(longest, window, q.device)
        o = torch.nn.functional.scaled_dot_product_attention(
            qs, ks, vs, attn_mask=mask, is_causal=mask is None, scale=scale, enable_gqa=gqa
        )
        outs.append(o.permute(0, 2, 1, 3).flatten(0, 1)[real])
    return torch.cat(outs)[back]


def refuse_score_keywords(kwargs: dict) -> None:
    """A keyword that changes the scores (Gemma 2's softcap, gpt-oss's sinks) would be dropped: refuse it."""
    for key, field in SCORE_KEYWORDS.items():
        if kwargs.get(key) is not None:
            raise RecipeError(
                f"model.attn_implementation: varlen does not apply `{key}` ({kwargs[key]!r}), which the model's "
                f"config sets through {field}; use attn_implementation auto or sdpa for this model"
            )


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    if dropout:
        raise ValueError(f"attn_implementation 'varlen': attention dropout ({dropout}) is not supported")
    refuse_score_keywords(kwargs)
    window = kwargs.get("sliding_window")
    b, hq, t, d = query.shape
    if key.shape[2] != t:  # decoding with a KV cache: not a packed-training shape, SDPA handles it
        return _cached_attention(module, query, key, value, attention_mask, scaling, kwargs)
    cu, max_len, index = segments(kwargs, attention_mask, b, t, query.device)
    q, k, v = (x.transpose(1, 2).reshape(b * t, x.shape[1], d) for x in (query, key, value))
    if index is not None:
        q, k, v = q[index], k[index], v[index]
    if varlen_path(q.device.type, q.dtype) == KERNEL:
        out = _kernel_attention(q, k, v, cu, max_len, scaling, window)
    else:  # CPU, or float32 on CUDA (the kernel would round to bf16): exact in the dtype given
        out = _reference_attention(q, k, v, cu, scaling, window)
    if index is not None:
        full = out.new_zeros(b * t, hq, d)
        full[index] = out
        out = full
    return out.reshape(b, t, hq, d), None


def _cached_attention(module, query, key, value, attention_mask, scaling, kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    t, tk = query.shape[2], key.shape[2]
    q_pos = torch.arange(tk - t, tk, device=query.device)
    kv_pos = torch.arange(tk, device=query.device)[None, :]
    mask = kv_pos <= q_pos[:, None]  # causal, bottom-right
    window = kwargs.get("sliding_window")
    if window:  # transformers' rule over the keys the cache holds: kv > q - W
        mask = mask & (kv_pos > q_pos[:, None] - window)
    mask = mask[None, None]
    if attention_mask is not None:  # the 2D padding mask over the cache
        mask = mask & attention_mask[:, None, None, -tk:].to(device=query.device, dtype=torch.bool)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("is_causal", "position_ids", "sliding_window")}
    return sdpa_attention_forward(module, query, key, value, mask, scaling=scaling, is_causal=False, **kwargs)
