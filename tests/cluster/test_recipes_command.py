"""`smoldist recipes`: the recipes shipped in the package, by name, and `--copy NAME DEST` to start one of your own."""

from __future__ import annotations

from smoldist.cli import main
from smoldist.cluster.shipped import known_recipes, share_root
from smoldist.config import load_recipe

NAMES = ("smollm2-135m/gsm8k", "smollm2-135m/smoltalk", "smollm2-135m/the-stack-smol", "smollm2-1.7b/smoltalk")


def test_recipes_are_listed_by_name(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line and not line.startswith("(")]
    assert set(NAMES) <= set(listed), out
    assert "GSM8K" in out  # with what each is for


def test_each_recipe_is_shown_with_its_whole_leading_comment_wrapped(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 100 for line in lines if not line.startswith("(from ")), lines
    for name, path in known_recipes().items():
        comment = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            comment += line.lstrip("#").split()
        shown = lines[lines.index(name) + 1 :]
        shown = shown[: next((i for i, line in enumerate(shown) if not line.startswith(" ")), len(shown))]
        assert shown and " ".join(" ".join(shown).split()) == " ".join(comment), (name, shown)
    # a command in a comment keeps a line of its own, to be copied as it is
    assert any(
        line.strip() == "data.sources.0.path=HuggingFaceTB/smol-smoltalk data.sources.0.name=null" for line in lines
    ), lines


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
