"""An untied LM head under FSDP2 with TRL's fused head (which reads `lm_head.weight` without calling `lm_head`), on CPU
with gloo (torch's fully_shard runs there; accelerate's FSDP does not): accelerate 1.16's grouping (the head in one
unit with the final norm) gives exact gradients with accumulation; a head in a unit of its own gives wrong ones
silently, and smoldist refuses that layout (smoldist/model/fused_head.py)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, torchrun

WORKER = REPO / "tests" / "model" / "fsdp2_untied_head_worker.py"


@pytest.mark.slow
@pytest.mark.parametrize("grouping, exact", [("accelerate", True), ("head-alone", False)])
def test_untied_head_under_fsdp2_with_trls_fused_head(tmp_path, grouping, exact):
    p = torchrun(WORKER, str(tmp_path), grouping)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["ok"] and rank["world"] == 2 and rank["head_sharded"] == "DTensor", rank
        wrong = {name for name, diff in rank["grad_diffs"].items() if diff > 1e-6}
        assert wrong == (set() if exact else {"lm_head.weight"}), rank["grad_diffs"]  # seen: 0.10 alone
        assert rank["refused"] is not exact  # smoldist's check names the layout that goes wrong


@pytest.mark.slow
def test_lora_with_added_tokens_on_a_tied_model_fails_in_fully_shard_and_is_refused(tmp_path):
    """peft's trainable-tokens wrapper hides the tie, so accelerate shards the shared embedding twice."""
    p = torchrun(WORKER, str(tmp_path), "peft-added-tokens")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    for r in (0, 1):
        rank = json.loads((tmp_path / f"rank-{r}.json").read_text())
        assert rank["tied_seen"] is False and rank["ok"] is False, rank  # seen: "TypeError: Invariant encountered"
        assert rank["refused"] is True  # smoldist refuses it before accelerate's prepare


def test_the_fsdp2_added_tokens_refusal_names_the_way_out():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from smoldist.errors import RecipeError
    from smoldist.model.fused_head import check_fsdp2_added_tokens
    from tests.helpers import TINY_INIT

    torch.manual_seed(0)
    model = get_peft_model(
        LlamaForCausalLM(LlamaConfig(vocab_size=256, **TINY_INIT)),
        LoraConfig(r=4, trainable_token_indices={"embed_tokens": [254, 255]}),
    )
    check_fsdp2_added_tokens(model, "MULTI_GPU")  # DDP: fine
    with pytest.raises(RecipeError, match="use DDP or DeepSpeed ZeRO-2/3"):
        check_fsdp2_added_tokens(model, "FSDP")
