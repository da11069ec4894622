"""Attention paths for packed rows (smoldist/model/attention.py) on CPU: no dense mask, segments, padding, decoding,
the sdpa warning, recipe validation, the eval batch bound, and a whole training run with `varlen`.
The CUDA kernel itself: tests/model/test_gpu.py."""

from __future__ import annotations

import warnings

import pytest
import torch

import smoldist.model.attention as attention
from smoldist.errors import RecipeError
from smoldist.model.attention import CHOICES, register, segments_from_positions, warn_dense_packed
from tests.helpers import as_row, collate, documents, tiny_model


def test_varlen_builds_no_mask_where_sdpa_builds_a_dense_one():
    from transformers.masking_utils import create_causal_mask

    model = tiny_model("varlen")
    batch = collate([as_row(documents()[:3]), as_row(documents()[3:])])
    t = batch["input_ids"].shape[1]
    embeds = torch.zeros(1, t, model.config.hidden_size)
    args = dict(inputs_embeds=embeds, attention_mask=None, past_key_values=None, position_ids=batch["position_ids"])
    assert create_causal_mask(config=model.config, **args) is None
    model.config._attn_implementation = "sdpa"
    dense = create_causal_mask(config=model.config, **args)
    assert tuple(dense.shape) == (1, 1, t, t)  # what varlen avoids: T x T


def test_segments_follow_position_resets_rows_and_padding():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]])
    cu, longest, index = segments_from_positions(pos, None, 2, 6, "cpu")
    assert cu.tolist() == [0, 3, 5, 6, 10, 11, 12] and longest == 4 and index is None
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # row 2 right-padded
    cu, longest, index = segments_from_positions(pos, mask, 2, 6, "cpu")
    assert cu.tolist() == [0, 3, 5, 6, 10] and index.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    cu, _, _ = segments_from_positions(None, None, 2, 4, "cpu")  # no position_ids: one document per row
    assert cu.tolist() == [0, 4, 8]


def test_segments_from_positions_equal_trl_collators_cu_seq_lens():
    batch = collate([as_row(documents()[:3]), as_row(documents()[3:])])
    cu, longest, _ = segments_from_positions(batch["position_ids"], None, 1, batch["input_ids"].shape[1], "cpu")
    assert cu.tolist() == batch["cu_seq_lens_q"].tolist() and longest == batch["max_length_q"]


def test_varlen_computes_segments_once_per_forward(monkeypatch):
    calls = []
    real = attention.segments_from_positions
    monkeypatch.setattr(attention, "segments_from_positions", lambda *a: calls.append(1) or real(*a))
    model = tiny_model("varlen")
    batch = collate([as_row(documents())])
    no_cu = {k: v for k, v in batch.items() if k in ("input_ids", "position_ids", "labels")}
    with torch.no_grad():
        model(**no_cu, use_cache=False)
        assert len(calls) == 1  # two layers, one computation
        model(**batch, use_cache=False)
        assert len(calls) == 1  # TRL's collator already gave cu_seq_lens: none


def test_varlen_with_padding_matches_sdpa_on_the_real_tokens():
    varlen, sdpa = tiny_model("varlen"), tiny_model("sdpa")
    ids = torch.randint(1, 64, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding
    mask[2, :5] = 0  # left padding
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        a = varlen(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
        b = sdpa(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    real = mask.bool()
    assert torch.allclose(a[real], b[real], atol=1e-5)


def test_varlen_generates_like_sdpa_with_a_kv_cache():
    varlen, sdpa = tiny_model("varlen"), tiny_model("sdpa")
    ids = torch.randint(1, 64, (1, 7), generator=torch.Generator().manual_seed(1))
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert varlen.generate(ids, **kw).tolist() == sdpa.generate(ids, **kw).tolist()


def test_varlen_gradients_equal_sdpa_on_one_document_per_row():
    grads = {}
    for attn in ("varlen", "sdpa"):
        model = tiny_model(attn).train()
        ids = torch.randint(1, 64, (2, 16), generator=torch.Generator().manual_seed(2))
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        grads[attn] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.allclose(grads["varlen"], grads["sdpa"], atol=1e-6)


def test_sdpa_on_packed_rows_warns_once_and_varlen_does_not(monkeypatch):
    monkeypatch.setattr(attention, "_dense_warned", False)
    packed = collate([as_row(documents())])
    one_doc = collate([as_row(documents()[:1])])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warn_dense_packed("varlen", packed)
        warn_dense_packed("sdpa", one_doc)  # one document: the dense mask is the plain causal one
        assert not seen
        warn_dense_packed("sdpa", packed)
        warn_dense_packed("sdpa", packed)
    assert len(seen) == 1 and "varlen" in str(seen[0].message) and "dense" in str(seen[0].message)


def test_recipe_names_the_valid_attention_choices(tmp_path, conversations_file):
    from smoldist.config.load import build_recipe
    from tests.helpers import recipe_dict

    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}])
    raw["model"]["attn_implementation"] = "flash"
    with pytest.raises(
        RecipeError, match=r"model\.attn_implementation: 'flash' is not one of auto, varlen, flex_attention, sdpa"
    ):
        build_recipe(raw, name="x")
    import typing

    from smoldist.config import ModelConfig

    assert typing.get_args(typing.get_type_hints(ModelConfig)["attn_implementation"]) == CHOICES


@pytest.mark.skipif(torch.cuda.is_available(), reason="flex_attention trains on a GPU")
def test_flex_attention_training_on_cpu_is_refused_before_training():
    from smoldist.model.attention import check_attn_implementation

    with pytest.raises(RecipeError, match="flex_attention has no backward pass on CPU"):
        check_attn_implementation("flex_attention", training=True)
    check_attn_implementation("flex_attention", training=False)


@pytest.mark.parametrize(
    "attn, rows, want", [("sdpa", 8, 1), ("eager", 4, 1), ("varlen", 8, 8), ("flex_attention", 2, 2)]
)
def test_eval_batch_is_one_row_where_the_mask_is_dense(tmp_path, conversations_file, attn, rows, want):
    from smoldist.config.load import build_recipe
    from smoldist.train.arguments import sft_config
    from tests.helpers import recipe_dict

    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}], train={"per_device_train_batch_size": rows})
    raw["model"]["attn_implementation"] = attn
    assert sft_config(build_recipe(raw, name="x"), 1, []).per_device_eval_batch_size == want
    raw["train"]["per_device_eval_batch_size"] = 3  # an explicit value wins
    assert sft_config(build_recipe(raw, name="x"), 1, []).per_device_eval_batch_size == 3


def test_training_with_varlen_equals_sdpa_and_saves_a_plain_transformers_model(tmp_path, conversations_file):
    """The whole path (store -> TRL collator -> SmoldistTrainer) with varlen: same losses as sdpa, eval included;
    the saved model loads in plain transformers (no smoldist import needed to use it)."""
    import json
    import subprocess
    import sys

    from smoldist.config.load import build_recipe
    from smoldist.train.run import run
    from tests.helpers import recipe_dict

    register()
    losses = {}
    for attn in ("sdpa", "varlen"):
        raw = recipe_dict(
            tmp_path,
            [{"path": str(conversations_file)}],
            train={
                "output_dir": str(tmp_path / attn),
                "eval_strategy": "steps",
                "eval_steps": 3,
                "save_steps": 100,
                "per_device_eval_batch_size": 2,
            },
        )  # the same eval batches
        # for both (eval_loss is per label token, but each attention's numerics follow the batch's shape)
        raw["data"]["eval_fraction"] = 0.2
        raw["model"]["attn_implementation"] = attn
        run(build_recipe(raw, name=attn))
        history = json.loads((tmp_path / attn / "trainer_state.json").read_text())["log_history"]
        losses[attn] = [h["loss"] for h in history if "loss" in h] + [
            h["eval_loss"] for h in history if "eval_loss" in h
        ]
    assert len(losses["varlen"]) == 4  # 3 training steps + 1 evaluation
    assert losses["varlen"] == pytest.approx(losses["sdpa"], rel=1e-4)
    saved = json.loads((tmp_path / "varlen" / "config.json").read_text())
    assert "varlen" not in json.dumps(saved)
    probe = (
        "import torch; from transformers import AutoModelForCausalLM as M; "
        f"m = M.from_pretrained({str(tmp_path / 'varlen')!r}); print(m.config._attn_implementation)"
    )
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.parametrize("generation", ["torch-2.10", "torch-2.13"])
def test_kernel_call_adapts_to_the_varlen_signature_of_each_torch(monkeypatch, generation):
    """The CUDA kernel's keywords differ by torch version (the GPU image has 2.11, this machine 2.13): the call
    adapts. The kernel here is a CPU stand-in with each version's signature (the real one: tests/model/test_gpu.py)."""
    seen = {}

    def old(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False, return_aux=None):  # 2.10: no scale, no GQA
        seen.update(is_causal=is_causal, heads=(q.shape[1], k.shape[1]))
        return attention._reference_attention(q.float(), k.float(), v.float(), cu_q, None)

    def new(q, k, v, cu_q, cu_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1), enable_gqa=False):
        seen.update(window=window_size, gqa=enable_gqa, scale=scale)
        return attention._reference_attention(q.float(), k.float(), v.float(), cu_q, scale)

    fake = old if generation == "torch-2.10" else new
    monkeypatch.setattr(attention, "_kernel", (fake, frozenset(__import__("inspect").signature(fake).parameters)))
    torch.manual_seed(0)
    q, k, v = torch.randn(20, 4, 16), torch.randn(20, 2, 16), torch.randn(20, 2, 16)
    cu = torch.tensor([0, 7, 20], dtype=torch.int32)
    got = attention._kernel_attention(q, k, v, cu, 13, 0.3, None)  # a scale that is not 1/sqrt(16)
    want = attention._reference_attention(q, k, v, cu, 0.3)
    assert torch.allclose(got, want, atol=1e-5)
    if generation == "torch-2.10":
        assert seen == {"is_causal": True, "heads": (4, 4)}  # causal flag, KV heads repeated, scale folded into q
        with pytest.raises(RecipeError, match="sliding_window=8"):  # no window keyword: refused, not dropped
            attention._kernel_attention(q, k, v, cu, 13, 0.3, 8)
    else:
        assert seen == {"window": (-1, 0), "gqa": True, "scale": 0.3}
        attention._kernel_attention(q, k, v, cu, 13, 0.3, 8)
        assert seen["window"] == (7, 0)  # transformers' kv > q - W: W - 1 keys back


@pytest.mark.slow
def test_two_process_ddp_with_varlen_trains_as_one_job_like_sdpa(tmp_path, conversations_file):
    """Every rank of a real `accelerate launch` registers varlen; the run is one job and matches sdpa's losses."""
    from tests.helpers import REPO, accelerate, assert_one_job, losses, write_recipe
    from tests.helpers import recipe_dict as rd

    recipe = write_recipe(
        tmp_path,
        rd(
            tmp_path,
            [{"path": str(conversations_file)}],
            train={"max_steps": 3, "save_steps": 100, "per_device_train_batch_size": 1},
        ),
    )
    config = str(REPO / "accelerate_configs" / "cpu_ddp.yaml")
    seen = {}
    for attn in ("sdpa", "varlen"):
        p = accelerate(
            [
                "--config_file",
                config,
                "-m",
                "smoldist.train",
                str(recipe),
                f"model.attn_implementation={attn}",
                f"train.output_dir={tmp_path / attn}",
            ]
        )
        assert p.returncode == 0, p.stderr[-4000:]
        assert ("builds a dense" in p.stderr) == (attn == "sdpa")  # the run used the attention it was given
        assert_one_job(tmp_path / attn, 2)
        seen[attn] = losses(tmp_path / attn)
    assert len(seen["varlen"]) == 3 and seen["varlen"] == pytest.approx(seen["sdpa"], rel=1e-4)
