"""FSDP2: the end-of-run fingerprint works on sharded DTensor parameters (marked slow).

accelerate's FSDP cannot run on a GPU-less machine (it silently runs DDP: FACTS.md), so this uses
torch's own `fully_shard` on 2 gloo processes under a real torchrun: every rank must get the checksum
and probe logits of the whole model, equal to those of the unsharded model, and so must LoRA's
frozen-weight checksum (model/lora.py), which hashes through the same function.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, torchrun

pytestmark = pytest.mark.slow


def test_fingerprints_of_a_fully_sharded_model_match_the_unsharded_ones(tmp_path):
    """final_fingerprint and LoRA's frozen_checksum (which crashed on DTensors: `.numpy()` of a tensor subclass)."""
    p = torchrun(REPO / "tests" / "distributed" / "fsdp2_fingerprint_worker.py", str(tmp_path))
    written = sorted(f.name for f in tmp_path.glob("rank-*.json"))  # a failure: before or after the work?
    assert p.returncode == 0, f"written: {written}\n" + p.stdout[-2000:] + p.stderr[-4000:]
    seen = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert {s["world_size"] for s in seen} == {2}
    for s in seen:  # it really was sharded: every parameter a DTensor, each rank holding about half
        assert s["dtensor_params"] == s["params"] > 0
        assert s["local_numel"] < s["full_numel"]
    assert seen[0]["sharded"][0] == seen[1]["sharded"][0] == seen[0]["unsharded"][0], "checksums differ"
    assert seen[0]["frozen_sharded"] == seen[1]["frozen_sharded"] == seen[0]["frozen_unsharded"], "frozen sums differ"
    for s in seen:
        assert s["sharded"][1] == pytest.approx(s["unsharded"][1], abs=1e-5), "probe logits differ from the unsharded's"
