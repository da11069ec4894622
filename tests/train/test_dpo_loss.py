"""The packed DPO loss equals TRL's: the same pairs and tiny model through TRL 1.16 `DPOTrainer` (padded, a reference
model beside the policy) and through smoldist's packed rows (pairs whole in rows, per-document attention, segment
sums), with the policy first moved away from the reference (at the start every implementation gives log 2)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from smoldist.config.recipe import resolve_path
from smoldist.eval.dpo_loss import PairCollator, dpo_pair_losses, pair_logps


def tiny_llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from smoldist.model.attention import register

    register()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(cfg)


def make_pairs(vocab: int, n: int = 6, seed: int = 0) -> list[dict]:
    g = np.random.default_rng(seed)
    draw = lambda lo, hi: g.integers(3, vocab, size=int(g.integers(lo, hi))).tolist()  # noqa: E731
    return [{"prompt_ids": draw(3, 12), "chosen_ids": draw(2, 9), "rejected_ids": draw(2, 9)} for _ in range(n)]


def packed_rows(pairs: list[dict], per_row: int) -> list[dict]:
    """Rows as a preference store holds them: chosen, rejected, ... documents, completions scored, pair ids."""
    rows = []
    for start in range(0, len(pairs), per_row):
        row = {"input_ids": [], "labels": [], "seq_lengths": [], "pair_ids": []}
        for i in range(start, min(start + per_row, len(pairs))):
            p = pairs[i]
            for side in ("chosen_ids", "rejected_ids"):
                row["input_ids"] += p["prompt_ids"] + p[side]
                row["labels"] += [-100] * len(p["prompt_ids"]) + p[side]
                row["seq_lengths"].append(len(p["prompt_ids"]) + len(p[side]))
                row["pair_ids"].append(i)
        rows.append(row)
    return rows


def moved(model, seed: int = 1):
    policy = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return policy


def smoldist_loss(policy, reference, pairs, beta, loss_type, per_row=2):
    rows = packed_rows(pairs, per_row)
    ref = np.full((len(pairs), 2), np.nan)
    for row in rows:
        batch = PairCollator(0)([row])
        with torch.no_grad():
            lp = pair_logps(reference, batch)
        ref[batch["pair_ids"].numpy()] = torch.stack([lp.chosen, lp.rejected], 1).double().numpy()
    policy.zero_grad()
    total = 0.0
    for i in range(0, len(rows), 2):  # micro-batches of two rows, each adding its share of the mean over all pairs
        batch = PairCollator(0, ref)(rows[i : i + 2])
        lp = pair_logps(policy, batch)
        losses, _ = dpo_pair_losses(
            lp, batch["ref_logps"][:, 0].float(), batch["ref_logps"][:, 1].float(), beta, loss_type
        )
        loss = losses.sum() / len(pairs)
        loss.backward()
        total += float(loss.detach())
    return total, {n: p.grad.clone() for n, p in policy.named_parameters()}


def trl_loss(policy, reference, pairs, beta, loss_type, tokenizer, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=beta,
        loss_type=loss_type,
        per_device_train_batch_size=len(pairs),
        use_cpu=True,
        bf16=False,
        report_to=[],
        max_length=None,
        activation_checkpointing=False,
    )
    text = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}])  # TRL tokenizes whatever it is given
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=text, processing_class=tokenizer)
    batch = trainer._prepare_inputs(trainer.data_collator(pairs))  # the pairs' tokens, through TRL's own collator
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "sigmoid_norm"])
def test_packed_loss_and_gradients_equal_trl(tmp_path, loss_type):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_path("pkg:demo/tokenizer"))
    vocab = len(tokenizer)
    base = tiny_llama(vocab)
    pairs = make_pairs(vocab)
    ours_policy = moved(base).train()
    ours_policy.set_attn_implementation("varlen")
    ours_ref = copy.deepcopy(base).eval()
    ours_ref.set_attn_implementation("varlen")
    ours, our_grads = smoldist_loss(ours_policy, ours_ref, pairs, 0.1, loss_type)
    theirs, their_grads = trl_loss(moved(base), copy.deepcopy(base), pairs, 0.1, loss_type, tokenizer, tmp_path)
    assert abs(ours - np.log(2)) > 1e-3  # the policy moved: not the trivial log 2 of step 0
    assert ours == pytest.approx(theirs, abs=1e-5)
    for name, g in their_grads.items():
        torch.testing.assert_close(our_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)
