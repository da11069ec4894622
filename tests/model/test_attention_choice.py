"""`attn_implementation: auto` (smoldist/model/attention_choice.py) and what varlen must get right to be the default:
sliding windows, score-changing keywords refused, float32 on CUDA kept exact, documents batched on CPU."""

from __future__ import annotations

import pytest
import torch

import smoldist.model.attention as attention
from smoldist.errors import RecipeError
from smoldist.model.attention_choice import KERNEL, PER_DOCUMENT, choose, varlen_path


def llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2)


def gemma3_config(window=8):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=window,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256,
    )


def gemma2_config():
    from transformers import Gemma2Config

    return Gemma2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=8,
        attn_logit_softcapping=50.0,
    )


def test_auto_takes_varlen_where_exact_and_says_why():
    c = choose("auto", llama_config(), "cpu", "bfloat16")
    assert c.name == "varlen" and "full attention" in c.line() and "per-document SDPA on cpu" in c.line()
    g = choose("auto", gemma3_config(), "cuda", "bfloat16")
    assert g.name == "varlen" and "sliding-window (8)" in g.reason and "FlashAttention kernel" in g.reason
    assert g.report() == {"asked": "auto", "chosen": "varlen", "reason": g.reason}
    assert choose("sdpa", llama_config(), "cpu", "bfloat16").name == "sdpa"  # an explicit choice is kept


def test_auto_takes_sdpa_and_varlen_is_refused_where_the_model_changes_the_scores():
    c = choose("auto", gemma2_config(), "cpu", "bfloat16")
    assert c.name == "eager" and "attn_logit_softcapping=50.0" in c.reason  # Gemma 2's class refuses sdpa
    with pytest.raises(RecipeError, match=r"varlen is not exact.*attn_logit_softcapping=50\.0"):
        choose("varlen", gemma2_config(), "cpu", "bfloat16")


def test_varlen_refuses_a_score_keyword_at_the_call_naming_the_config_field():
    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(RecipeError, match=r"softcap.*attn_logit_softcapping"):
        attention.varlen_attention_forward(None, q, q, q, None, softcap=50.0)


def test_float32_on_cuda_takes_the_exact_per_document_path_and_says_so():
    """The CUDA kernel takes bf16/fp16 only: float32 used to be rounded to bf16 silently."""
    assert varlen_path("cuda", torch.bfloat16) == KERNEL and varlen_path("cuda", torch.float16) == KERNEL
    assert varlen_path("cuda", torch.float32) == PER_DOCUMENT and varlen_path("cpu", torch.bfloat16) == PER_DOCUMENT
    c = choose("auto", llama_config(), "cuda", "float32")
    assert c.name == "varlen" and "exact per-document SDPA path in float32" in c.reason
    assert "kernel" in choose("varlen", llama_config(), "cuda", "bfloat16").reason


def tiny_gemma3(attn: str):
    from transformers import Gemma3ForCausalLM

    attention.register()
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(gemma3_config()).eval()
    model.config._attn_implementation = attn
    return model


def test_sliding_window_varlen_equals_sdpa_equals_each_document_alone():
    """Two 40-token documents in one row, window 8: local layers must not attend past 8 tokens back."""
    ids = torch.randint(1, 64, (1, 80), generator=torch.Generator().manual_seed(0))
    pos = torch.cat([torch.arange(40), torch.arange(40)])[None]
    varlen, sdpa = tiny_gemma3("varlen"), tiny_gemma3("sdpa")
    with torch.no_grad():
        a = varlen(input_ids=ids, position_ids=pos, use_cache=False).logits
        b = sdpa(input_ids=ids, position_ids=pos, use_cache=False).logits
        alone = torch.cat([sdpa(input_ids=ids[:, s : s + 40], use_cache=False).logits for s in (0, 40)], dim=1)
    assert (a - alone).abs().max() < 1e-5 and (b - alone).abs().max() < 1e-5


def test_documents_group_by_length_within_the_padding_slack():
    groups = attention.document_groups([10, 3, 10, 9, 2, 40])
    assert groups[0] == [5]  # the long one alone: padding 10s to 40 would cost far more than their own work
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert groups == [[5], [0, 2, 3, 1], [4]]  # 10, 10, 9 and 3 in one call: 4 x 10^2 <= 1.5 x their own
    assert attention.document_groups([5, 5, 5, 5]) == [[0, 1, 2, 3]]


@pytest.mark.parametrize("window", [None, 3])
def test_grouped_per_document_path_equals_one_sdpa_call_per_document_forward_and_backward(window):
    torch.manual_seed(0)
    lengths = [7, 13, 1, 13, 6, 12, 2, 7]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    n = int(cu[-1])
    q, k, v = (torch.randn(n, h, 8, requires_grad=True) for h in (4, 2, 2))
    got = attention._reference_attention(q, k, v, cu, 0.3, window)
    grads = torch.autograd.grad(got.square().sum(), (q, k, v))
    want = []
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        qs, ks, vs = (x[s:e].transpose(0, 1) for x in (q, k, v))
        mask = attention._window_mask(e - s, window, "cpu")
        want.append(
            torch.nn.functional.scaled_dot_product_attention(
                qs, ks, vs, attn_mask=mask, is_causal=mask is None, scale=0.3, enable_gqa=True
            ).transpose(0, 1)
        )
    want = torch.cat(want)
    assert torch.allclose(got, want, atol=1e-6)
    for g, w in zip(grads, torch.autograd.grad(want.square().sum(), (q, k, v))):
        assert torch.allclose(g, w, atol=1e-5)
