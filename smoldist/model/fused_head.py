"""TRL's fused LM head under FSDP2: it reads `lm_head.weight` and never calls `lm_head`, so the head's parameters must
sit in a fully_shard unit that some module's forward does unshard.

accelerate 1.16 (the locked version) puts an untied head in one unit with the final norm (the tail, kept unsharded
after its forward): the norm's forward unshards the head, and the gradients are exact (tests/model/
test_fsdp2_untied_head.py, CPU, gloo, with accumulation). A head in a unit of its own never unshards: TRL then
gathers the sharded DTensor itself, and on CPU the head's accumulated gradients come out wrong, with no error.
`check_head_unit` refuses that layout in one line before the first step.
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
