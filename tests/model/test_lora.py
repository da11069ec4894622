"""LoRA runs: an adapter is trained and saved, the frozen base stays bit-identical, merge equals base + adapter.

The base is a tiny pretrained model saved to disk (LoRA needs a base that can be reloaded). Multi-process
runs (DDP, ZeRO-2, ZeRO-3) are real `accelerate launch` subprocesses, marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoldist.config import load_recipe
from smoldist.errors import RecipeError
from smoldist.train.run import run
from tests.helpers import LORA, recipe_dict, save_tiny_base, write_recipe


@pytest.fixture
def tiny_base(tmp_path) -> Path:
    return save_tiny_base(tmp_path / "base")


@pytest.fixture
def lora_recipe(tmp_path, conversations_file, tiny_base) -> Path:
    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}])
    raw["model"] = {"name_or_path": str(tiny_base), "dtype": "float32", "lora": dict(LORA)}
    return write_recipe(tmp_path, raw)


def base_checksum(base_dir: Path) -> str:
    from transformers import AutoModelForCausalLM

    from smoldist.model.lora import frozen_checksum

    return frozen_checksum(AutoModelForCausalLM.from_pretrained(base_dir))


def probe_logits(model):
    import torch

    ids = torch.arange(1, 17).unsqueeze(0)
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_lora_run_saves_an_adapter_leaves_the_base_untouched_and_resumes(lora_recipe, tiny_base, tmp_path):
    from safetensors.torch import load_file

    run(load_recipe(lora_recipe))
    out = tmp_path / "run"
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file() and not (
        out / "model.safetensors"
    ).exists()  # the adapter, not a full model
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and cfg["base_model_name_or_path"] == str(tiny_base.resolve())
    weights = load_file(out / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    assert any(float(w.abs().sum()) > 0 for k, w in weights.items() if "lora_B" in k)  # B starts at zero: it trained
    (rank,) = [json.loads(p.read_text()) for p in (out / "ranks").glob("rank-*.json")]
    assert rank["frozen_sha256"] == base_checksum(tiny_base)  # every frozen weight bit-identical to the base
    metrics = run(load_recipe(lora_recipe, ["train.max_steps=5"]))  # preemption/resume: continues from the adapter
    assert metrics["resumed_from"].endswith("checkpoint-3")
    steps = [h["step"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert steps == [1, 2, 3, 4, 5]


def test_merged_model_equals_base_plus_adapter_and_chat_reads_both(lora_recipe, tiny_base, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from smoldist.cli import main
    from smoldist.eval.generate import chat
    from smoldist.model.lora import load_model

    run(load_recipe(lora_recipe))
    out = tmp_path / "run"
    assert main(["merge", str(out), str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    adapted = load_model(out)  # base + adapter, unmerged
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert torch.allclose(probe_logits(merged), probe_logits(adapted), atol=1e-5)
    assert not torch.allclose(probe_logits(merged), probe_logits(base), atol=1e-4)  # the adapter changed something
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tok.chat_template == AutoTokenizer.from_pretrained(out).chat_template
    assert isinstance(chat(str(out), "Hi", max_new_tokens=4), str)
    assert chat(str(out), "Hi", max_new_tokens=6) == chat(str(tmp_path / "merged"), "Hi", max_new_tokens=6)


def test_merge_refuses_a_full_model(tiny_base):
    from smoldist.model.merge import merge

    with pytest.raises(RecipeError, match="not a LoRA run"):
        merge(tiny_base)


def test_lora_flops_count_weight_gradients_of_trainable_weights_only(tiny_base):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from smoldist.config import LoraConfig
    from smoldist.model.lora import peft_config
    from smoldist.train.throughput import FlopModel

    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    full = FlopModel.of(base)
    model = get_peft_model(base, peft_config(LoraConfig(**LORA)))
    lora = FlopModel.of(model)
    adapter = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert adapter > 0 and lora.n_trainable_matmul_params == adapter
    assert lora.n_matmul_params == full.n_matmul_params + adapter
    T = 1000
    assert lora.flops(T, 0) == (4 * (full.n_matmul_params + adapter) + 2 * adapter) * T
    assert full.flops(T, 0) == 6 * full.n_matmul_params * T


def test_lora_recipe_checks(tmp_path, conversations_file, tiny_base):
    raw = recipe_dict(tmp_path, [{"path": str(conversations_file)}])
    raw["model"]["lora"] = dict(LORA)
    with pytest.raises(RecipeError, match=r"model\.lora: needs a pretrained base"):
        load_recipe(write_recipe(tmp_path, raw))
    raw["model"] = {"name_or_path": str(tiny_base)}
    r = load_recipe(write_recipe(tmp_path, raw), ["model.lora.r=8", "model.lora.target_modules=q_proj,v_proj"])
    assert r.model.lora.r == 8 and r.model.lora.alpha == 32 and r.model.lora.target_modules == "q_proj,v_proj"
    with pytest.raises(RecipeError, match="must be positive"):
        load_recipe(write_recipe(tmp_path, raw), ["model.lora.r=0"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, engine", [("cpu_ddp", "ddp"), ("cpu_zero2", "deepspeed-zero2"), ("cpu_zero3", "deepspeed-zero3")]
)
def test_lora_trains_as_one_distributed_job(tmp_path, conversations_file, tiny_base, config, engine):
    from tests.helpers import CONFIGS, accelerate, assert_one_job, ranks

    raw = recipe_dict(
        tmp_path,
        [{"path": str(conversations_file)}],
        train={"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 1},
    )
    raw["model"] = {"name_or_path": str(tiny_base), "dtype": "float32", "lora": dict(LORA)}
    recipe = write_recipe(tmp_path, raw)
    cfg = str(CONFIGS / f"{config}.yaml")
    first = accelerate(["--config_file", cfg, "-m", "smoldist.train", str(recipe), "train.max_steps=2"])
    assert first.returncode == 0, first.stderr[-4000:]
    second = accelerate(["--config_file", cfg, "-m", "smoldist.train", str(recipe)])
    assert second.returncode == 0, second.stderr[-4000:]
    out = tmp_path / "run"
    assert "resuming from" in second.stdout and "trainable: LoRA" in second.stdout
    assert_one_job(out, 2)  # world size 2 on both ranks, identical checksums
    seen = ranks(out)
    assert {r["engine"] for r in seen} == {engine}
    assert {r["frozen_sha256"] for r in seen} == {base_checksum(tiny_base)}
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
