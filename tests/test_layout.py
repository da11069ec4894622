"""The house by stage (docs/design.md): no import cycles, a short top level, small files, each stage says what it is.

The layers themselves are import-linter's contracts (pyproject.toml, `lint-imports` in `make test`); these are the
rules it does not state. Imports are read by grimp (import-linter's own graph): every import statement, inside
functions too, so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import subprocess

import grimp
import pytest

from tests.helpers import REPO

PACKAGE = REPO / "smoldist"
STAGES = ("config", "data", "store", "distributed", "model", "eval", "train", "cluster")
MAX_TOP_LEVEL_MODULES = 8
MAX_LINES = 400


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), plus modules that import themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


def module_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph("smoldist", cache_dir=None)
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def test_cycle_finder_finds_a_cycle_through_three_modules():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert import_cycles(edges) == [["a", "b", "c"], ["e"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_smoldist_modules():
    edges = module_graph()
    assert len(edges) > 50, sorted(edges)  # the whole package was read, not a stub of it
    assert "smoldist.store.build" in edges["smoldist.train.run"]  # lazy and top-level imports alike
    assert import_cycles(edges) == []


def test_top_level_holds_only_the_cli_the_recipe_and_errors():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules
    assert all((PACKAGE / stage / "__init__.py").is_file() for stage in STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_says_what_it_takes_and_gives(stage):
    doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text()))
    assert doc and len(doc.splitlines()) >= 3, f"smoldist/{stage}/__init__.py needs a docstring"
    for module in sorted((PACKAGE / stage).glob("*.py")):  # the docstring names every module of the stage
        if module.stem not in ("__init__", "__main__"):
            assert module.stem in doc, f"smoldist/{stage}/__init__.py does not mention {module.name}"


def test_no_file_over_the_limit():
    files = [*PACKAGE.rglob("*.py"), *(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")]
    long = {str(f.relative_to(REPO)): n for f in files if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_blame_skips_only_commits_that_reformat():
    """.git-blame-ignore-revs names only commits of this history that say they are formatting only."""
    revs = [line for line in (REPO / ".git-blame-ignore-revs").read_text().splitlines() if line and line[0] != "#"]
    assert revs
    shallow = subprocess.run(
        ["git", "rev-parse", "--is-shallow-repository"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    if shallow.stdout.strip() != "false":
        pytest.skip("a shallow clone (or no git): the history is not here")
    for rev in revs:
        subject = subprocess.run(
            ["git", "log", "-1", "--format=%s", rev], cwd=REPO, capture_output=True, text=True, timeout=30
        )
        assert subject.returncode == 0 and "formatting only" in subject.stdout, (rev, subject.stdout + subject.stderr)
