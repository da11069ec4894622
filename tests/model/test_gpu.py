"""On a CUDA GPU (marked `gpu`, never in CI; run by bench/gpu/proof.sh through the device tool):
the varlen FlashAttention kernel and flex_attention give the packed loss of the documents run one by one (bf16
tolerance), and every engine (single_gpu, multi_gpu as 1 process, fsdp2, zero2, zero3) trains a few steps of the
135M shape and saves a model that reloads with the same logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO, recipe_dict, write_recipe

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
SHAPE_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 2048,
}
DEMO = REPO / "smoldist" / "demo" / "conversations.jsonl"


def packed_documents(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(40, 400, (n,), generator=g).tolist()
    return [torch.randint(0, 1000, (s,), generator=g).tolist() for s in lengths]


def gpu_model(attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from smoldist.model.attention import register

    register()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    model = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16)
    model.config._attn_implementation = attn
    return model


@pytest.mark.parametrize("attn", ["varlen", "flex_attention", "sdpa"])
def test_packed_loss_and_gradients_equal_the_documents_run_one_by_one_in_bf16(attn):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    docs = packed_documents()
    model = gpu_model(attn)
    row = {
        "input_ids": [t for d in docs for t in d],
        "labels": [t for d in docs for t in d],
        "seq_lengths": [len(d) for d in docs],
    }
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)([row])
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
    packed = model(**batch, use_cache=False).loss
    packed.backward()
    g_packed = torch.cat([p.grad.float().flatten() for p in model.parameters()])
    model.zero_grad()
    total, count = 0.0, 0
    for d in docs:  # token-weighted mean over documents (the first token of each is never predicted)
        ids = torch.tensor([d], device="cuda")
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        (loss * (len(d) - 1) / (sum(len(x) for x in docs) - len(docs))).backward()
        total, count = total + loss.item() * (len(d) - 1), count + len(d) - 1
    g_docs = torch.cat([p.grad.float().flatten() for p in model.parameters()])
    assert packed.item() == pytest.approx(total / count, rel=1e-2)
    assert torch.nn.functional.cosine_similarity(g_packed, g_docs, dim=0) > 0.999


def test_varlen_kernel_matches_sdpa_per_document():
    from smoldist.model.attention import _kernel_attention, _reference_attention

    torch.manual_seed(0)
    lengths = [5, 300, 77, 1024, 1]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda", dtype=torch.int32)
    t = sum(lengths)
    q = torch.randn(t, 9, 64, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(t, 3, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    fast = _kernel_attention(q, k, v, cu, max(lengths), 64**-0.5, None)
    ref = _reference_attention(q.float(), k.float(), v.float(), cu.cpu(), 64**-0.5)
    assert (fast.float() - ref).abs().max().item() < 2e-2


def test_auto_takes_the_varlen_kernel_in_bf16_and_the_exact_path_in_float32_on_cuda():
    from transformers import LlamaConfig

    from smoldist.model.attention_choice import choose

    cfg = LlamaConfig(**SHAPE_135M)
    assert choose("auto", cfg, "cuda", "bfloat16").name == "varlen"
    assert "kernel" in choose("auto", cfg, "cuda", "bfloat16").reason
    assert "exact per-document SDPA path in float32" in choose("auto", cfg, "cuda", "float32").reason


@pytest.mark.parametrize("window", [None, 96], ids=["full", "sliding"])
def test_varlen_kernel_equals_per_document_sdpa_in_bf16_forward_and_backward_head_dim_256(window):
    """Gemma 3's head_dim (256) and its local layers: the kernel with window_size=(W-1, 0) against SDPA per document
    with transformers' band (kv > q - W), values and gradients, in bf16."""
    from smoldist.model.attention import _kernel_attention, _reference_attention

    torch.manual_seed(0)
    lengths = [5, 300, 77, 700, 1, 130]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda", dtype=torch.int32)
    t = sum(lengths)
    q = torch.randn(t, 4, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(t, 1, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    fast = _kernel_attention(q, k, v, cu, max(lengths), 256**-0.5, window)
    grads_fast = torch.autograd.grad(fast.float().square().sum(), (q, k, v))
    ref = _reference_attention(q, k, v, cu, 256**-0.5, window)  # per-document SDPA, bf16, on the GPU
    grads_ref = torch.autograd.grad(ref.float().square().sum(), (q, k, v))
    assert (fast.float() - ref.float()).abs().max().item() < 2e-2
    for a, b in zip(grads_fast, grads_ref):
        assert (a.float() - b.float()).abs().max().item() <= 2e-2 * (1 + b.float().abs().max().item())


def test_varlen_and_sdpa_train_the_135m_shape_alike(tmp_path):
    from smoldist.config.load import build_recipe
    from smoldist.train.run import run

    losses = {}
    for attn in ("sdpa", "varlen"):
        raw = engine_recipe(tmp_path, attn, tmp_path / attn)
        run(build_recipe(raw, name=attn))
        history = json.loads((tmp_path / attn / "trainer_state.json").read_text())["log_history"]
        losses[attn] = [h["loss"] for h in history if "loss" in h]
    assert losses["varlen"][0] == pytest.approx(losses["sdpa"][0], rel=2e-2), losses  # same init, same batch
    assert len(losses["varlen"]) == 3


def engine_recipe(tmp_path, attn: str, out) -> dict:
    raw = recipe_dict(
        tmp_path,
        [{"path": str(DEMO), "format": "messages"}],
        train={
            "output_dir": str(out),
            "max_steps": 3,
            "save_steps": 100,
            "per_device_train_batch_size": 2,
            "learning_rate": 1e-4,
            "logging_steps": 1,
        },
    )
    raw["model"].update(init=dict(SHAPE_135M), dtype="bfloat16", attn_implementation=attn)
    raw["data"]["seq_len"] = 2048
    return raw


ENGINES = {
    "single_gpu": {"single"},
    "multi_gpu": {"ddp", "single"},
    "fsdp2": {"fsdp2"},
    "zero2": {"deepspeed-zero2"},
    "zero3": {"deepspeed-zero3"},
}


@pytest.mark.parametrize("config", list(ENGINES))
def test_engine_trains_the_135m_shape_and_saves_a_model_that_reloads_with_the_same_logits(tmp_path, config):
    from transformers import AutoModelForCausalLM

    from smoldist.distributed.fingerprint import PROBE_TOKENS

    out = tmp_path / "run"
    recipe = write_recipe(tmp_path, engine_recipe(tmp_path, "varlen", out))
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate_configs" / f"{config}.yaml"),
        "--num_processes",
        "1",
        "--main_process_port",
        "29517",
        "-m",
        "smoldist.train",
        str(recipe),
    ]
    p = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env=dict(os.environ, WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false"),
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    rank = json.loads((out / "ranks" / "rank-0.json").read_text())
    assert rank["engine"] in ENGINES[config] and rank["world_size"] == 1, rank
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).to("cuda").eval()
    ids = (torch.arange(1, PROBE_TOKENS + 1, device="cuda").unsqueeze(0)) % model.config.vocab_size
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :, :4].float().flatten().tolist()
    assert logits == pytest.approx(rank["probe_logits"], rel=2e-2, abs=2e-2)
