"""ZeRO-3 builds the model partitioned (deepspeed.zero.Init), not whole on every rank (marked slow)."""

from __future__ import annotations

import pytest

from tests.helpers import CONFIGS, TINY_INIT, accelerate, assert_one_job, ranks, recipe_dict, write_recipe

pytestmark = pytest.mark.slow


def pretrained_tiny_model(path):
    """A small saved checkpoint: zero.Init partitions pretrained weights (a random init is built whole on purpose)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from smoldist.config.recipe import PACKAGE_DIR

    tok = AutoTokenizer.from_pretrained(PACKAGE_DIR / "demo" / "tokenizer")
    cfg = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **TINY_INIT,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_zero3_builds_the_model_partitioned(tmp_path, conversations_file):
    raw = recipe_dict(
        tmp_path,
        [{"path": str(conversations_file)}],
        train={"max_steps": 1, "save_steps": 100, "per_device_train_batch_size": 1},
    )
    raw["model"] = {"name_or_path": str(pretrained_tiny_model(tmp_path / "tiny")), "dtype": "float32"}
    recipe = write_recipe(tmp_path, raw)
    p = accelerate(["--config_file", str(CONFIGS / "cpu_zero3.yaml"), "-m", "smoldist.train", str(recipe)], timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "(built partitioned, ZeRO-3 zero.Init)" in p.stdout, p.stdout[-3000:]
    assert "0.00 M parameters" not in p.stdout  # a partition's numel() is 0: the count uses ds_numel
    assert_one_job(tmp_path / "run", 2)
    assert [r.get("built_partitioned") for r in ranks(tmp_path / "run")] == [True, True]
    assert {r["engine"] for r in ranks(tmp_path / "run")} == {"deepspeed-zero3"}
