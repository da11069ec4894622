"""An installed smoldist (a built wheel, not editable, not this checkout) finds its own files from any directory.

A user on a cluster runs `pip install .`; configs, sbatch scripts and node launchers must ship inside
the package. The wheel is built offline (no build isolation) and installed with `--no-deps --target`
into a scratch folder, so torch & co. come from this interpreter and nothing is downloaded. Marked slow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow
PIP = [sys.executable, "-m", "pip", "--no-input", "--disable-pip-version-check"]
SKIP = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "runs",
    "prepared",
    "build",
    "dist",
    "logs",
    "*.egg-info",
    "__pycache__",
    "wandb",
    ".pytest_cache",
    ".hypothesis",
    ".whl",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=SKIP)  # build from a copy: an in-tree build leaves build/ behind
    p = subprocess.run(
        [*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "wheel"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    shutil.rmtree(src)  # nothing may lean on the source tree
    return next((tmp / "wheel").glob("smoldist-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("install") / "site"
    p = subprocess.run(
        [*PIP, "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return site


def smoldist(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PYTHONPATH"] = str(site)  # the installed copy, not this checkout
    return subprocess.run(
        [str(site / "bin" / "smoldist"), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_installed_package_is_the_one_running(installed, tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", "import smoldist; print(smoldist.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(installed)),
        timeout=120,
    )
    assert p.stdout.strip().startswith(str(installed)), p.stdout + p.stderr


def test_configs_are_listed_from_another_directory(installed, tmp_path):
    p = smoldist(installed, tmp_path, "configs")
    assert p.returncode == 0, p.stderr
    for name in ("cpu_ddp", "cpu_zero3", "fsdp2", "multi_gpu", "zero3_offload"):
        assert f"\n{name} " in "\n" + p.stdout, p.stdout
    assert str(installed) in p.stdout


def test_train_dry_run_finds_a_named_config(installed, tmp_path):
    p = smoldist(installed, tmp_path, "train", "--accelerate-config", "cpu_ddp", "--num-processes", "2", "--dry-run")
    assert p.returncode == 0, p.stderr
    config = installed / "smoldist" / "share" / "accelerate_configs" / "cpu_ddp.yaml"
    assert f"--config_file {config} --num_processes 2" in p.stdout, p.stdout
    assert config.is_file()


def test_submit_dry_run_points_at_shipped_scripts(installed, tmp_path):
    p = smoldist(installed, tmp_path, "submit", "--nodes", "2", "--dry-run")  # the bundled demo recipe
    assert p.returncode == 0, p.stderr
    share = installed / "smoldist" / "share"
    for script in ("prepare.sbatch", "train.sbatch"):
        assert str(share / "slurm" / script) in p.stdout, p.stdout
    for script in ("slurm/prepare.sbatch", "slurm/train.sbatch", "launch/node.sh", "launch/train.sh"):
        assert (share / script).is_file(), script
    assert (share / "launch" / "smollm2-135m" / "smoltalk.yaml").is_file()  # the recipes ship too


def test_wheel_holds_the_recipes_and_the_accelerate_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    share = "smoldist/share"
    for recipe in (REPO / "launch").glob("*/*.yaml"):
        assert f"{share}/launch/{recipe.parent.name}/{recipe.name}" in names, recipe
    for config in (REPO / "accelerate_configs").glob("*.yaml"):
        assert f"{share}/accelerate_configs/{config.name}" in names, config
    assert "smoldist/demo/demo.yaml" in names and "smoldist/data/templates/smollm2.jinja" in names


def test_recipes_are_listed_and_copied_from_an_installed_package(installed, tmp_path):
    p = smoldist(installed, tmp_path, "recipes")
    assert p.returncode == 0 and "smollm2-135m/gsm8k" in p.stdout, p.stdout + p.stderr
    p = smoldist(installed, tmp_path, "recipes", "--copy", "smollm2-135m/gsm8k", "mine.yaml")
    assert p.returncode == 0, p.stderr
    shipped = installed / "smoldist" / "share" / "launch" / "smollm2-135m" / "gsm8k.yaml"
    assert (tmp_path / "mine.yaml").read_text() == shipped.read_text()
    recipe = "pkg:share/launch/smollm2-135m/gsm8k.yaml"
    code = f"from smoldist.config import load_recipe; print(load_recipe('{recipe}').name)"
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(installed)),
    )
    assert p.stdout.strip() == "smollm2-135m-gsm8k", p.stdout + p.stderr  # a pkg: recipe, from the installed package
