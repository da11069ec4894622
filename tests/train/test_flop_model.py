"""FlopModel against torch's own count (`FlopCounterMode`) of a CPU training step, and the LM head charged on
trained tokens only when TRL's fused head scores only those (CUDA with Triton)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

from smoldist.train.throughput import FlopModel, head_on_trained_tokens


def llama(tied: bool):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(cfg)
    model.config._attn_implementation = "eager"  # every attention matmul is an op FlopCounterMode sees
    return model


@pytest.mark.parametrize("tied", [True, False])
def test_flop_model_matches_torchs_count_of_a_training_step(tied):
    model, seq = llama(tied), 128
    ids = torch.randint(0, 512, (1, seq))
    with FlopCounterMode(display=False) as counter:
        model(ids, labels=ids).loss.backward()
    want = FlopModel.of(model).flops(seq, seq * seq)
    # the rest: rotary embeddings' tiny matmul; full S^2 attention, as both count it
    assert counter.get_total_flops() == pytest.approx(want, rel=0.01)


def test_head_is_charged_on_trained_tokens_when_the_fused_head_skips_the_others():
    model = llama(True)
    every, compact = FlopModel.of(model), FlopModel.of(model, head_on_trained_tokens=True)
    head = model.get_output_embeddings().weight.numel()
    tokens, trained, sq = 1000, 400, 100_000
    assert every.flops(tokens, sq, trained) == every.flops(tokens, sq)  # CPU: TRL scores every position
    assert every.flops(tokens, sq) - compact.flops(tokens, sq, trained) == 6 * head * (tokens - trained)


def test_trl_scores_only_trained_tokens_exactly_on_triton_devices():
    assert head_on_trained_tokens(torch.device("cpu")) is False
    from trl.kernels.chunked_logprob import _TRITON_AVAILABLE

    assert head_on_trained_tokens(torch.device("cuda")) is _TRITON_AVAILABLE
