"""Files smoldist ships besides code: accelerate configs, sbatch scripts, node launchers, recipes.

They live at the top of the repository (accelerate_configs/, slurm/, launch/), and the package
reaches them through `smoldist/share/`, whose entries are symlinks to those folders in a checkout
and plain copies in an installed wheel (setuptools follows the links). So a `pip install .`
(non-editable) finds the same files as a checkout, from any directory.

    smoldist configs        # the accelerate configs by name, with what each is for
"""

from __future__ import annotations

from pathlib import Path

SHARE = Path(__file__).resolve().parents[1] / "share"  # smoldist/share/


def share_root() -> Path:
    """The folder holding accelerate_configs/, slurm/ and launch/: the repository in a checkout, else the package's
    copy."""
    return (SHARE / "launch").resolve().parent


def config_dirs() -> list[Path]:
    """Where `--accelerate-config NAME` looks: the current directory's accelerate_configs/ first, then the shipped
    ones."""
    return [Path.cwd() / "accelerate_configs", share_root() / "accelerate_configs"]


def known_configs() -> dict[str, Path]:
    """Every config name found, first folder wins."""
    found: dict[str, Path] = {}
    for folder in config_dirs():
        for p in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            found.setdefault(p.stem, p)
    return dict(sorted(found.items()))


def describe_config(path: Path) -> str:
    """The config's leading comment (each shipped config starts with one saying what it is for)."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    return " ".join(words)


def list_configs() -> str:
    lines = [f"{name:<14} {describe_config(path)}" for name, path in known_configs().items()]
    return "\n".join(lines + [f"(from {', '.join(str(d) for d in config_dirs() if d.is_dir())})"])
