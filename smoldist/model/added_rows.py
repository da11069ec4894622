"""Rows of tokens added to a vocabulary, trained at the cost of those rows (LoRA with `model.chat_template` adding
tokens: model/lora.py trainable_token_rows, fit_trainable_tokens).

peft's trainable tokens merge the whole table (`index_copy` of the trained rows into a copy) on every forward and on
every `.weight` read, and the copy requires grad: the embedding's backward and TRL's fused LM head (its chunked
log-prob builds a vocabulary x hidden fp32 weight gradient whenever the weight requires grad) each form a dense
table-sized gradient to update k rows. On a 262,144-token vocabulary that is most of a LoRA step's memory.

`train_added_rows` keeps peft's modules and parameters (the adapter saves, loads and merges as before) and changes
what they compute, for the table's last k rows (model/build.py added_rows):
- embedding: a lookup in the frozen table, the k trained rows put in where the ids are added ones;
- head: the frozen table's logits for the old tokens, h @ rows^T for the added ones;
- `.weight`: the frozen table itself (no copy, no grad), marked with its trained rows; TRL's chunked log-prob, given a
  marked weight, scores the old tokens with the frozen part (a view, no weight gradient) and adds the k columns:
  log Z = logaddexp(log Z_old, logsumexp(z_added)). Loss and gradients equal peft's (tests/model/test_added_rows.py).
"""

from __future__ import annotations

import types

MARK = "smoldist_added_rows"  # on the tensor `.weight` returns: (first added id, the trained rows)


def tail_rows(layer):
    """(first, rows) when the layer's one active adapter trains the table's last rows (smoldist's), else None."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    (name,) = layer.active_adapters
    n = layer.get_base_layer().weight.shape[0]
    first = n - len(layer.token_indices[name])
    if list(layer.token_indices[name]) != list(range(first, n)):
        return None
    return first, layer.trainable_tokens_delta[name]


def forward_rows(self, x, active_adapters, *args, **kwargs):
    """TrainableTokensLayer.forward_adapters without the merged table: frozen lookup or projection + the k rows."""
    import torch
    import torch.nn.functional as F

    found = tail_rows(self) if list(active_adapters) == list(self.active_adapters) else None
    if found is None:
        return type(self).forward_adapters(self, x, active_adapters, *args, **kwargs)
    first, rows = found
    base = self.base_layer
    w = base.weight
    rows = rows.to(w)
    if isinstance(base, torch.nn.Embedding):
        out = F.embedding(x, w, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq, base.sparse)
        added = F.embedding((x - first).clamp(min=0), rows)
        out = torch.where((x >= first).unsqueeze(-1), added, out)
        scale = self._get_embed_scale()  # Gemma 3 scales its embeddings inside its own forward, as peft does here
        return out if scale is None else out * scale.to(out.dtype)
    if isinstance(base, torch.nn.Linear):
        bias = base.bias
        old = F.linear(x, w[:first], None if bias is None else bias[:first])
        return torch.cat([old, F.linear(x, rows, None if bias is None else bias[first:])], dim=-1)
    return type(self).forward_adapters(self, x, active_adapters, *args, **kwargs)


def weight_rows(self, name, modules):
    """TrainableTokensWrapper's `.weight`: the frozen table, marked with its trained rows (read by `log_probs`)."""
    layer = modules["token_adapter"]
    found = tail_rows(layer) if name == "weight" else None
    if found is None:
        return type(self)._getattr_wrapped(self, name, modules)
    weight = layer.base_layer.weight.detach()  # an alias: the same storage, no grad
    setattr(weight, MARK, found)
    return weight


def train_added_rows(model) -> int:
    """Make a peft model's trainable-token layers train their rows at the cost of those rows; the number changed."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    from peft.utils.other import TrainableTokensWrapper

    changed = 0
    for module in model.modules():
        if isinstance(module, TrainableTokensLayer) and tail_rows(module) is not None:
            module.forward_adapters = types.MethodType(forward_rows, module)
            changed += 1
        elif isinstance(module, TrainableTokensWrapper):
            module._getattr_wrapped = types.MethodType(weight_rows, module)
    if changed:
        patch_trl_log_probs()
    return changed


def patch_trl_log_probs() -> None:
    """TRL's fused head calls trl.trainer.utils._ChunkedLogProbFunction.apply(hidden, head.weight, ...): a marked
    weight goes to `log_probs`, any other to TRL's function unchanged."""
    import trl.trainer.utils as trl_utils

    if getattr(trl_utils._ChunkedLogProbFunction, "smoldist", False):
        return
    original = trl_utils._ChunkedLogProbFunction

    class RowsAwareLogProb:
        smoldist = True

        @staticmethod
        def apply(hidden, weight, *args):
            if getattr(weight, MARK, None) is None:
                return original.apply(hidden, weight, *args)
            return log_probs(original, hidden, weight, *args)

    trl_utils._ChunkedLogProbFunction = RowsAwareLogProb


def log_probs(
    kernel, hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0, outputs=()
):
    """TRL's chunked log-prob outputs over the whole vocabulary, from the kernel over the old tokens (frozen, no weight
    gradient; an added target lies outside it, so its logit there stays 0) and the k added columns, here."""
    import torch
    from trl.kernels.chunked_logprob import OPTIONAL_OUTPUTS, _torch_transform

    first, rows = getattr(weight, MARK)
    if weight.dim() != 2 or rows.dim() != 2 or rows.shape[0] == 0:  # ZeRO-3 partitions read outside their module
        raise RuntimeError(
            f"LoRA's added-token rows: the head weight {tuple(weight.shape)} or the rows {tuple(rows.shape)} are not "
            "whole here (a partitioned engine, e.g. DeepSpeed ZeRO-3); train added tokens under one process or DDP"
        )
    frozen = weight[:first]
    vocab = weight.shape[0]
    device = hidden.device
    cd = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else hidden.dtype
    transform = lambda z: _torch_transform(z.float(), logit_scale, softcap or 1.0, 1 / temperature, softcap is not None)  # noqa: E731
    wanted = tuple(o for o in OPTIONAL_OUTPUTS if o in outputs)
    added = targets >= first
    lp_old, ent_old, sq_old, mean_old, top1_old = kernel.apply(
        hidden,
        frozen,
        None if bias is None else bias[:first],
        torch.where(added, first, targets),
        temperature,
        chunk_size,
        softcap,
        logit_scale,
        wanted,
    )
    h = hidden.to(cd)
    z_rows = h @ rows.to(cd).t()
    if bias is not None:
        z_rows = z_rows + bias[first:].to(cd)
    z_rows = transform(z_rows)  # [N, k]
    # the target's logit, computed as the kernel does (a matmul in the compute dtype, then the transform)
    target_w = torch.where(
        added.unsqueeze(-1), rows[(targets - first).clamp(min=0)], frozen[targets.clamp(max=first - 1)]
    )
    z_t = (h.unsqueeze(1) @ target_w.to(cd).unsqueeze(-1)).view(-1)
    if bias is not None:
        z_t = z_t + bias[targets].to(cd)
    z_t = transform(z_t)
    log_z_old = torch.where(added, -lp_old, z_t - lp_old)
    log_z = torch.logaddexp(log_z_old, torch.logsumexp(z_rows, dim=-1))
    logprobs = z_t - log_z

    entropy = sq = mean = top1 = None
    if "entropy" in wanted:  # -sum p log p: the old tokens' share w times (their entropy - log w), + the added terms
        log_w = log_z_old - log_z
        log_p_rows = z_rows - log_z.unsqueeze(-1)
        entropy = torch.exp(log_w) * (ent_old - log_w) - (torch.exp(log_p_rows) * log_p_rows).sum(-1)
    with torch.no_grad():
        if "log_sum_sq_probs" in wanted:
            sq = torch.logaddexp(sq_old + 2 * log_z_old, torch.logsumexp(2 * z_rows, dim=-1)) - 2 * log_z
        if "mean_logits" in wanted:
            mean = (mean_old * first + z_rows.sum(-1)) / vocab
        if "is_top1" in wanted:
            top1 = is_top1(top1_old, frozen, bias, h, z_t, z_rows, targets - first, added, transform, chunk_size)
    return logprobs, entropy, sq, mean, top1


def is_top1(top1_old, frozen, bias, h, z_t, z_rows, local, added, transform, chunk_size):
    """argmax == target (the first maximum, as torch and TRL's kernel count it), with the added columns last."""
    import torch

    k = z_rows.shape[-1]
    cols = torch.arange(k, device=z_rows.device)
    ninf = torch.tensor(float("-inf"), device=z_rows.device)
    before = torch.where(cols < local.unsqueeze(-1), z_rows, ninf).amax(-1)
    after = torch.where(cols > local.unsqueeze(-1), z_rows, ninf).amax(-1)
    top1 = torch.where(added, (z_t > before) & (z_t >= after), top1_old & (z_t >= z_rows.amax(-1)))
    sel = added.nonzero().view(-1)
    if sel.numel():  # an added target must also beat every old token: few such positions, the table in chunks
        best = torch.full((sel.numel(),), float("-inf"), device=z_rows.device)
        for start in range(0, frozen.shape[0], chunk_size):
            end = min(start + chunk_size, frozen.shape[0])
            z_old = h[sel] @ frozen[start:end].to(h.dtype).t()
            if bias is not None:
                z_old = z_old + bias[start:end].to(h.dtype)
            best = torch.maximum(best, transform(z_old).amax(-1))
        top1[sel] &= z_t[sel] > best
    return top1
