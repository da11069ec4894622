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
