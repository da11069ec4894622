"""DPO under FSDP2 on CPU (marked slow). accelerate's FSDP does not run without a GPU (it silently runs DDP: FACTS.md),
so this runs torch's own `fully_shard` on 2 gloo processes under a real torchrun (tests/distributed/
dpo_fsdp2_worker.py): the reference pass with the weights on rank 0 only, and the pair loss's gradients."""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, torchrun

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_dpo_reference_and_loss_under_fsdp2_match_one_process(tmp_path):
    p = torchrun(REPO / "tests" / "distributed" / "dpo_fsdp2_worker.py", str(tmp_path), timeout=400)
    written = sorted(f.name for f in tmp_path.glob("rank-*.json"))
    assert p.returncode == 0, f"written: {written}\n" + p.stdout[-2000:] + p.stderr[-4000:]
    seen = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(s["ok"] for s in seen), seen
    assert {s["world"] for s in seen} == {2}
    assert seen[0]["key"] == seen[1]["key"] and seen[0]["key_same"]  # rank 1 (meta) takes rank 0's key
    assert seen[0]["ref_max_diff"] < 1e-6 and all(s["ref_finite"] for s in seen)
    for s in seen:  # it really was sharded, and the accumulated, averaged gradients are the global batch mean's
        assert s["sharded"] == "DTensor"
        assert s["max_grad_diff"] < 1e-6, s
        assert s["loss"] == pytest.approx(s["mean_loss"], abs=1e-6)
