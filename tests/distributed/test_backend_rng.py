"""Pure rules of the distributed layer, checked with the strings and lists the libraries hand over."""

from __future__ import annotations

import pytest

from smoldist.distributed.checkpoints import cuda_state_for
from smoldist.distributed.state import collective_device


@pytest.mark.parametrize(
    "backend, device",
    [("nccl", "cuda"), ("cuda:nccl,cpu:gloo", "cuda"), ("gloo", "cpu"), ("cpu:gloo,cuda:nccl", "cuda"), (None, "cpu")],
)
def test_collective_device_finds_nccl_in_a_mixed_backend_string(backend, device):
    # accelerate's FSDP FULL_STATE_DICT group is "cuda:nccl,cpu:gloo": its tensors must be on the GPU
    assert collective_device(backend) == device


def test_each_rank_restores_the_cuda_state_of_its_own_device():
    saved = ["gpu0", "gpu1", "gpu2", "gpu3"]  # get_rng_state_all() of a process that saw every GPU
    assert cuda_state_for(saved, device_index=2) == "gpu2"
    assert cuda_state_for("one", device_index=3) == "one"  # one process, one saved state
    assert cuda_state_for(["only"], device_index=1) == "only"  # CUDA_VISIBLE_DEVICES: one device seen, index 0
