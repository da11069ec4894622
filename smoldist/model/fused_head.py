"""TRL's fused LM head under FSDP2: it reads `lm_head.weight` and never calls `lm_head`, so the head's parameters must
sit in a fully_shard unit that some module's forward does unshard.

accelerate 1.16 (the locked version) puts an untied head in one unit with the final norm (the tail, kept unsharded
after its forward): the norm's forward unshards the head, and the gradients are exact (tests/model/
test_fsdp2_untied_head.py, CPU, gloo, with accumulation). A head in a unit of its own never unshards: TRL then
gathers the sharded DTensor itself, and on CPU the head's accumulated gradients come out wrong, with no error.
`check_head_unit` refuses that layout in one line before the first step.

LoRA with tokens added to a tied vocabulary (peft's trainable tokens) under FSDP2: peft's wrapper returns a fresh
tensor for `.weight` (model/added_rows.py keeps that: an alias of the frozen table), so accelerate sees the head as
untied, shards the embedding as its own unit and then the tail [norm, lm_head], which holds the same base weight,
already a DTensor: `fully_shard` fails ("Invariant encountered", seen on CPU with gloo). `check_fsdp2_added_tokens`
refuses it before any work (not re-proven on CPU with the alias: the refusal stays).
"""

from __future__ import annotations

from smoldist.errors import RecipeError


def head_unit_alone(model) -> bool:
    """True when the output embedding is a fully_shard unit whose only module is itself (no forward unshards it)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(base, "get_output_embeddings", lambda: None)()
    state_of = getattr(head, "_get_fsdp_state", None)
    if state_of is None:  # not FSDP2, or the head is in its parent's unit (unsharded by that forward)
        return False
    group = state_of()._fsdp_param_group
    return group is not None and all(m is head for m in group.modules)


def check_head_unit(model) -> None:
    if head_unit_alone(model):
        raise RecipeError(
            "FSDP2 sharded lm_head as a unit of its own, which TRL's fused LM head reads without calling it, so it "
            "never unshards and its gradients are wrong; use accelerate's fsdp2 config with the locked accelerate "
            "(it groups lm_head with the final norm), or a tied model"
        )


def tied_trainable_tokens(model) -> bool:
    """A peft model training added-token rows (TrainableTokensWrapper) of a tied embedding."""
    if not hasattr(model, "get_base_model"):
        return False
    from peft.utils.other import TrainableTokensWrapper

    base = model.get_base_model()
    wrapped = any(isinstance(m, TrainableTokensWrapper) for m in base.modules())
    return wrapped and bool(getattr(base.config.get_text_config(), "tie_word_embeddings", False))


def check_fsdp2_added_tokens(model, distributed_type: str) -> None:
    if distributed_type == "FSDP" and tied_trainable_tokens(model):
        raise RecipeError(
            "model.lora: tokens added to a tied vocabulary (model.chat_template adds them) are not trained under "
            "FSDP2: peft hides the tie from accelerate, which shards the shared embedding twice and fully_shard "
            "fails; use DDP or DeepSpeed ZeRO-2/3, or a chat template whose tokens the vocabulary already has"
        )
