"""Files smoldist ships besides code: accelerate configs, sbatch scripts, node launchers, recipes.

They live at the top of the repository (accelerate_configs/, slurm/, launch/), and the package
reaches them through `smoldist/share/`, whose entries are symlinks to those folders in a checkout
and plain copies in an installed wheel (setuptools follows the links). So a `pip install .`
(non-editable) finds the same files as a checkout, from any directory.

    smoldist configs        # the accelerate configs by name, with what each is for
    smoldist recipes        # the recipes by name; `--copy NAME DEST` writes one to edit
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from smoldist.errors import RecipeError

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


def leading_comment(path: Path) -> list[str]:
    """The file's leading comment lines without their '# ' (each shipped file starts with one saying what it is)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].removeprefix(" ").rstrip())
    return lines


def describe_config(path: Path) -> str:
    return " ".join(line.strip() for line in leading_comment(path))


def wrap_comment(lines: list[str], width: int, indent: str) -> list[str]:
    """Prose joined and wrapped at `width`; a line indented in the comment (a command to copy) kept as it is."""
    out, prose = [], []
    for line in [*lines, " "]:  # the final indented blank flushes the last paragraph
        if line.startswith(" "):
            out += textwrap.wrap(" ".join(prose), width, initial_indent=indent, subsequent_indent=indent)
            out += [indent + line] if line.strip() else []
            prose = []
        else:
            prose.append(line)
    return out


def list_configs() -> str:
    lines = [f"{name:<14} {describe_config(path)}" for name, path in known_configs().items()]
    return "\n".join(lines + [f"(from {', '.join(str(d) for d in config_dirs() if d.is_dir())})"])


def known_recipes() -> dict[str, Path]:
    """The recipes shipped in launch/, by name: `smollm2-135m/gsm8k` for launch/smollm2-135m/gsm8k.yaml."""
    folder = share_root() / "launch"
    return {f"{p.parent.name}/{p.stem}": p for p in sorted(folder.glob("*/*.yaml"))}


def list_recipes() -> str:
    """Each recipe's name, then its whole leading comment, indented and wrapped to the terminal (at most 100)."""
    width = min(shutil.get_terminal_size((100, 24)).columns, 100)
    lines = []
    for name, path in known_recipes().items():
        lines += [name, *wrap_comment(leading_comment(path), width, "    ")]
    hint = "copy one to edit: smoldist recipes --copy NAME my-recipe.yaml; or use one as is: pkg:share/launch/NAME.yaml"
    return "\n".join(lines + [f"(from {share_root() / 'launch'}; {hint})"])


def copy_recipe(name: str, dest: str) -> Path:
    """Write the shipped recipe `name` to `dest` (never over an existing file)."""
    recipes = known_recipes()
    if name not in recipes:
        raise RecipeError(f"recipes --copy: no recipe '{name}'; shipped: {', '.join(recipes)}")
    out = Path(dest)
    if out.exists():
        raise RecipeError(f"recipes --copy: {out} exists; give a new file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(recipes[name].read_bytes())
    return out
