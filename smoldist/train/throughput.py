"""Honest throughput: real (document) tokens, trained tokens, data wait, and MFU for packed batches.

FLOPs of one training step (forward + backward), over the documents actually in it:
    (2 N + 2 N + 2 N_t) * T  -  (4 H + 2 H_t) * (T - T_trained)  +  12 * L * d * sum(s_i^2)
     fwd   act.grad  weight grad   the LM head skipped on untrained tokens      attention
N: parameters that take part in matmuls (all of them, less the input embedding when untied);
N_t: those of them that train; T: real tokens (no padding); H, H_t: the LM head's share of N, N_t, charged
only on trained tokens when TRL's fused head scores only those (CUDA/XPU with Triton; elsewhere every token);
L: layers; d: attention width
(heads x head_dim); s_i: length of each document. Forward costs 2N per token; the backward pass
computes activation gradients through every matmul (2N) but weight gradients only for trainable
weights (2 N_t). Full fine-tuning has N_t = N: the usual 6NT. LoRA has N = base + adapter and
N_t = adapter only, so a LoRA step counts about 4NT: frozen weights need no weight gradients. The
attention term is summed per document, because a packed row of documents costs what its documents
cost, not what one row-long sequence would. For a single document filling a row,
this equals the usual non-packed 6NT + 12 L d S^2 per row.

Attention convention: the full S^2 score matrix per document (PaLM's convention, as FlopCounterMode counts sdpa),
although a causal kernel computes about half of it; MFU under the causal-half convention reads lower by that share.

Counters accumulate on each rank and are summed across ranks only at logging steps.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import torch

# Dense bf16 peak per device with fp32 accumulation (what PyTorch uses), TFLOP/s, from vendor data
# sheets; GeForce cards run fp32-accumulate at half their headline rate. Override: tracking.peak_tflops.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "H800": 989.0,
    "GH200": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
    "A10": 125.0,
    "RTX 4090": 82.6,
    "RTX 3090": 35.6,
}


def device_peak_tflops(override: float | None = None) -> float | None:
    """Peak TFLOP/s of this process's device: the override, else the table by CUDA device name, else None."""
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # "H200" before "H20", "A100" before "A10"
        if key in name:
            return PEAK_TFLOPS[key]
    return None


ATTENTION_CONVENTION = "attention counted as the full S^2 per document (PaLM convention; a causal kernel does half)"


def head_on_trained_tokens(device) -> bool:
    """TRL 1.16's fused LM head scores only label positions where Triton runs (trl/trainer/utils.py), else all."""
    try:
        from trl.kernels.chunked_logprob import _use_triton
    except ImportError:  # renamed in another TRL: its rule as read in 1.16
        import importlib.util

        return importlib.util.find_spec("triton") is not None and torch.device(device).type in ("cuda", "xpu")
    return bool(_use_triton(torch.device(device)))


@dataclass(frozen=True)
class FlopModel:
    n_matmul_params: int
    layers: int
    attn_width: int
    n_trainable_matmul_params: int | None = None  # None: all of them train (full fine-tuning)
    n_head_params: int = 0  # the LM head matrix (part of n_matmul_params)
    head_trains: bool = False  # its weight gets a gradient (full fine-tuning; not LoRA)
    head_on_trained_tokens: bool = False  # TRL's fused head skips tokens with no label

    @classmethod
    def of(cls, model, head_on_trained_tokens: bool = False) -> FlopModel:
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        numel = lambda p: getattr(p, "ds_numel", None) or p.numel()  # noqa: E731  (ZeRO-3 partitions parameters)
        total = sum(numel(p) for p in model.parameters())
        trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
        embed_w = model.get_input_embeddings().weight
        embed = numel(embed_w)
        tied = getattr(cfg, "tie_word_embeddings", False)
        n = total if tied else total - embed  # the tied matrix is used once, as the LM head matmul
        if not tied and embed_w.requires_grad:
            trainable -= embed  # an untied input embedding's gradient is a scatter, not a matmul
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        head_w = model.get_output_embeddings().weight
        return cls(
            n,
            cfg.num_hidden_layers,
            cfg.num_attention_heads * head_dim,
            trainable,
            numel(head_w),
            head_w.requires_grad,
            head_on_trained_tokens,
        )

    def flops(self, tokens: int, sum_sq_lengths: int, trained_tokens: int | None = None) -> float:
        n, nt = self.n_matmul_params, self.n_trainable_matmul_params
        nt = n if nt is None else nt
        total = (4.0 * n + 2.0 * nt) * tokens + 12.0 * self.layers * self.attn_width * sum_sq_lengths
        if self.head_on_trained_tokens and trained_tokens is not None:  # the head never ran on the other tokens
            head = 4.0 * self.n_head_params + (2.0 * self.n_head_params if self.head_trains else 0.0)
            total -= head * (tokens - trained_tokens)
        return total


def batch_stats(inputs: dict) -> tuple[int, int, int]:
    """(real tokens, trained tokens, sum of squared document lengths) of one padding-free batch."""
    labels = inputs["labels"]
    pos = inputs.get("position_ids")
    if pos is None:  # not padding-free: each unpadded row is one document
        mask = inputs.get("attention_mask")
        lengths = mask.sum(-1) if mask is not None else torch.full((labels.shape[0],), labels.shape[-1])
    else:
        flat = pos.reshape(-1)
        starts = (flat == 0).nonzero().flatten()
        ends = torch.cat([starts[1:], torch.tensor([flat.numel()], device=flat.device)])
        lengths = ends - starts
    real = int(lengths.sum())
    trained = int((labels[..., 1:] != -100).sum())  # the first label is never predicted (shifted loss)
    return real, trained, int((lengths.to(torch.int64) ** 2).sum())


class ThroughputMeter:
    """Local counters between two logging steps; `report()` sums them over ranks and returns metrics."""

    def __init__(self, flop_model: FlopModel, peak_tflops: float | None, world_size: int):
        self.flop_model, self.peak, self.world = flop_model, peak_tflops, world_size
        self.reset()

    def reset(self) -> None:
        self.tokens = self.trained = self.sum_sq = 0
        self.data_wait = 0.0
        self.window_start = time.perf_counter()
        self.steps = 0

    def count(self, inputs: dict) -> None:
        real, trained, sq = batch_stats(inputs)
        self.tokens += real
        self.trained += trained
        self.sum_sq += sq

    def waited(self, seconds: float) -> None:
        self.data_wait += seconds

    def optimizer_step(self) -> None:
        self.steps += 1

    def report(self) -> dict[str, float]:
        """Metrics for the window since the last report (collective: every rank must call it)."""
        import torch.distributed as dist

        from smoldist.distributed.state import collective_device

        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        totals = torch.tensor([self.tokens, self.trained, self.sum_sq, self.data_wait], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized() and self.world > 1:
            totals = totals.to(collective_device(dist.get_backend()))
            dist.all_reduce(totals)
            totals = totals.cpu()
        tokens, trained, sum_sq, wait = totals.tolist()
        flops_per_device = self.flop_model.flops(int(tokens), int(sum_sq), int(trained)) / self.world
        out = {
            "perf/tokens_per_s_per_device": tokens / elapsed / self.world,
            "perf/trained_tokens_per_s_per_device": trained / elapsed / self.world,
            "perf/step_time_s": elapsed / max(self.steps, 1),
            "perf/data_wait_fraction": wait / self.world / elapsed,
            "perf/tflops_per_device": flops_per_device / elapsed / 1e12,
            "perf/peak_memory_gib": peak_memory_gib(),
        }
        if self.peak:
            out["perf/mfu"] = flops_per_device / elapsed / (self.peak * 1e12)
        self.reset()
        return out


def peak_memory_gib() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux: the process's peak RSS
