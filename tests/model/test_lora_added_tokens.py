"""LoRA on a base model whose vocabulary lacks ChatML's tokens (`model.chat_template: chatml` + `model.lora`).

The added rows train (peft trainable tokens; the tied head follows) and are saved with the adapter, as rows, not as
the whole table. Loading the run grows the base's vocabulary by the rule training used, before the adapter loads: the
run loads, chats and merges, and stops on `<|im_end|>` under plain generate(), merged or not."""

from __future__ import annotations

import json

import pytest

from smoldist.config import load_recipe
from smoldist.train.run import run
from tests.helpers import LORA, chatml_base_recipe, losses, ranks, save_base_without_chatml


@pytest.fixture
def base(tmp_path):
    return save_base_without_chatml(tmp_path / "base", embedding_std=0.5)  # a frozen table LoRA can learn against


def plain_reply(model, tok, prompt: str) -> str:
    """Greedy generate() with the model's own generation config: no stop ids passed in."""
    import torch

    inputs = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.eval().generate(**inputs, max_new_tokens=20, do_sample=False)
    return tok.decode(out[0, inputs["input_ids"].shape[1] :])


def probe_logits(model, vocab: int):
    import torch

    ids = torch.tensor([[1, 5, vocab - 2, 7, vocab - 1, 3]])  # the added tokens among old ones
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_lora_with_added_chatml_tokens_trains_their_rows_loads_chats_merges_and_stops(base, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from smoldist.cli import main
    from smoldist.eval.generate import chat
    from smoldist.model.build import build_model, load_tokenizer
    from smoldist.model.lora import frozen_checksum, load_model

    recipe = chatml_base_recipe(tmp_path, base, "today", lora=dict(LORA))
    run(load_recipe(recipe))
    out = tmp_path / "run"
    tok = AutoTokenizer.from_pretrained(out)
    old = AutoModelForCausalLM.from_pretrained(base).get_input_embeddings().weight.detach()
    vocab = old.shape[0] + 2
    assert len(tok) == vocab and tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [vocab - 2, vocab - 1]

    # load (base grown to the run's vocabulary, then the adapter), chat, and stop under plain generate()
    adapted = load_model(out)
    assert adapted.get_input_embeddings().weight.shape[0] == vocab
    assert plain_reply(adapted, tok, "Hello 3!") == "today<|im_end|>"
    assert chat(str(out), "Hello 3!") == "today"

    # the adapter holds the two added rows (trained), not a copy of the whole grown table
    rows = {k: w for k, w in load_file(out / "adapter_model.safetensors").items() if "lora_" not in k}
    assert [tuple(w.shape) for w in rows.values()] == [(2, old.shape[1])], rows.keys()
    (trained,) = rows.values()
    assert not torch.equal(trained[1], old[tok.convert_tokens_to_ids("<|endoftext|>")])  # moved from its start row
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert list(cfg["trainable_token_indices"].values()) == [[vocab - 2, vocab - 1]]
    # every weight that does not train is bit-identical to the base grown by the rule training used
    model_cfg = load_recipe(recipe).model
    (rank,) = ranks(out)
    assert rank["frozen_sha256"] == frozen_checksum(build_model(model_cfg, load_tokenizer(model_cfg)))

    # merge: a self-contained model of the grown vocabulary, tied, equal to base + adapter, stopping by itself
    assert main(["merge", str(out), str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert merged.config.vocab_size == vocab
    assert merged.get_output_embeddings().weight.data_ptr() == merged.get_input_embeddings().weight.data_ptr()
    assert torch.allclose(probe_logits(merged, vocab), probe_logits(adapted, vocab), atol=1e-5)
    assert plain_reply(merged, AutoTokenizer.from_pretrained(tmp_path / "merged"), "Hello 3!") == "today<|im_end|>"

    # resume: the checkpoint's adapter, rows included, loads into the grown model; training goes on where it was
    # (rows back at their initial values would put the loss of <|im_end|> back near the start's)
    assert run(load_recipe(recipe, ["train.max_steps=62"]))["resumed_from"].endswith("checkpoint-60")
    seen = losses(out)
    assert len(seen) == 62 and seen[60] < 2 * seen[59] < 0.1 < seen[0]


@pytest.mark.parametrize("tied", [True, False])
def test_added_rows_train_through_trls_fused_head_tied_or_not(tmp_path, tied):
    """The rows train through the input embedding and the head TRL's loss reads (`head.weight`, `head.bias`), in a
    tied head (peft ties it to the embedding's rows) and an untied one (its own rows); nothing else of either table."""
    import torch
    from peft import get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    from smoldist.config import LoraConfig, ModelConfig
    from smoldist.model.build import build_model, load_tokenizer
    from smoldist.model.lora import fit_trainable_tokens, peft_config, trainable_token_rows

    cfg = ModelConfig(name_or_path=str(save_base_without_chatml(tmp_path / "b", tied=tied)), chat_template="chatml")
    tok = load_tokenizer(cfg)
    model = build_model(cfg, tok)
    rows = trainable_token_rows(model, tok.smoldist_added)
    vocab = len(tok)
    assert rows == (
        {"model.embed_tokens": [vocab - 2, vocab - 1]}
        if tied
        else {"model.embed_tokens": [vocab - 2, vocab - 1], "lm_head": [vocab - 2, vocab - 1]}
    )
    model = get_peft_model(model, peft_config(LoraConfig(**LORA), rows))
    fit_trainable_tokens(model)
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs",))
    ids = torch.tensor([[1, vocab - 2, 5, 7, vocab - 1]])
    out = model(input_ids=ids, labels=ids, fused_lm_head=True)
    (-out.log_probs.sum()).backward()
    deltas = {n: p for n, p in model.named_parameters() if "trainable_tokens_delta" in n}
    assert len(deltas) == (1 if tied else 2) and all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in deltas.values()
    )
    assert [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n] == list(deltas)


@pytest.mark.slow
def test_added_rows_train_as_one_ddp_job(base, tmp_path):
    """2-process DDP: one job (same weights on both ranks, the trainable rows included), the frozen base identical on
    both, and the run loads with its grown vocabulary."""
    from smoldist.model.lora import load_model, load_tokenizer_of
    from tests.helpers import CONFIGS, accelerate, assert_one_job

    recipe = chatml_base_recipe(tmp_path, base, "today", lora=dict(LORA))
    done = accelerate(
        [
            "--config_file",
            str(CONFIGS / "cpu_ddp.yaml"),
            "-m",
            "smoldist.train",
            str(recipe),
            "train.max_steps=4",
            "train.per_device_train_batch_size=2",
        ]
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = tmp_path / "run"
    assert_one_job(out, 2)
    assert len({r["frozen_sha256"] for r in ranks(out)}) == 1
    assert load_model(out).get_input_embeddings().weight.shape[0] == len(load_tokenizer_of(out))
