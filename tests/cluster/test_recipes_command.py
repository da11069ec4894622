"""`smoldist recipes`: the recipes shipped in the package, by name, and `--copy NAME DEST` to start one of your own."""

from __future__ import annotations

from smoldist.cli import main
from smoldist.cluster.shipped import share_root
from smoldist.config import load_recipe

NAMES = ("smollm2-135m/gsm8k", "smollm2-135m/smoltalk", "smollm2-135m/the-stack-smol", "smollm2-1.7b/smoltalk")


def test_recipes_are_listed_by_name(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line and not line.startswith("(")]
    assert set(NAMES) <= set(listed), out
    assert "GSM8K" in out  # with what each is for


def test_copy_writes_the_recipe_where_asked_and_it_loads(tmp_path, capsys):
    dest = tmp_path / "mine.yaml"
    assert main(["recipes", "--copy", "smollm2-135m/gsm8k", str(dest)]) == 0
    assert dest.read_text() == (share_root() / "launch" / "smollm2-135m" / "gsm8k.yaml").read_text()
    assert str(dest) in capsys.readouterr().out
    assert load_recipe(dest).data.sources[0].path == "openai/gsm8k"
    assert main(["recipes", "--copy", "smollm2-135m/gsm8k", str(dest)]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err


def test_copy_of_an_unknown_name_lists_the_names(tmp_path, capsys):
    assert main(["recipes", "--copy", "gsm8k", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "smollm2-135m/gsm8k" in err[0], err
