"""requirements.lock is the tested set: the suite runs on exactly its versions, and pyproject.toml's ranges admit
them, so `make install` and a `pip install smoldist` user inside the ranges meet no combination nobody tested."""

from __future__ import annotations

import os
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.helpers import REPO
from tests.lock_drift import drift, installed, norm, read_lock

UNLOCKED = bool(os.environ.get("SMOLDIST_UNLOCKED"))  # set by `make test-latest`: the newest versions, on purpose


def pyproject_requirements() -> list[Requirement]:
    """pyproject.toml's dependencies and every extra's, as the installed project states them."""
    return [Requirement(r) for r in metadata.requires("smoldist")]


@pytest.mark.skipif(UNLOCKED, reason="make test-latest runs the newest versions the ranges allow, not the lock")
def test_this_environment_is_the_locked_set():
    differs = drift(read_lock(), installed())
    assert not differs, f"not the tested set (rm -rf .venv && make install): {differs}"


def test_the_lock_holds_every_requirement_inside_its_range():
    lock = read_lock()
    for req in pyproject_requirements():
        name = norm(req.name)
        assert name in lock, f"{req} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(Version(lock[name]), prereleases=True), f"lock {name}=={lock[name]} vs {req}"


def test_every_library_smoldist_leans_on_has_an_upper_bound():
    """A `pip install smoldist` user gets no version of these that nobody tested."""
    leans_on = {"torch", "transformers", "trl", "accelerate", "deepspeed", "peft", "wandb", "tokenizers", "datasets"}
    for req in pyproject_requirements():
        if norm(req.name) in leans_on:
            assert any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), f"{req}: no upper bound"


def test_the_lock_takes_the_torch_that_constraints_txt_pins():
    """constraints.txt (the CPU wheel's version) is the input of `make lock` and `make test-latest`."""
    pinned = [
        Requirement(line)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert [norm(r.name) for r in pinned] == ["torch"]
    assert pinned[0].specifier.contains(Version(read_lock()["torch"]))


def test_drift_names_each_package_that_differs():
    lock = {"accelerate": "1.15.0", "torch": "2.13.0+cpu"}
    have = {"accelerate": "1.16.0", "torch": "2.13.0+cpu", "liger-kernel": "0.6.0", "smoldist": "0.1.0"}
    assert drift(lock, have) == ["accelerate 1.16.0 (lock 1.15.0)", "liger-kernel 0.6.0 (not in the lock)"]
