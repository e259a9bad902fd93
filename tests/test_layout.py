"""The house's layout, read from the import statements (module level and inside functions alike).

Stages stand on one another in the order the data flows, over one common base: ``common`` <- ``scrapy_ptt`` <-
``curation`` <- ``evaluation`` <- ``training`` (evaluation knows the curated dataset and diffusers' pipeline folder,
never the trainer; the trainer samples and scores through it). A package may import only those below it, and no
two modules may import each other, directly or round a longer circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ["common", "scrapy_ptt", "curation", "evaluation", "training"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every project module ``path`` imports (``from a.b import c`` counts as ``a.b`` and, if it is one, ``a.b.c``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in FLOORS}


def _graph() -> dict[str, set[str]]:
    files = [p for floor in FLOORS for p in (ROOT / floor).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


@pytest.mark.parametrize("floor", FLOORS)
def test_no_package_imports_a_later_stage(floor):
    later = FLOORS[FLOORS.index(floor) + 1 :]
    bad = sorted(
        f"{mod} imports {dep}"
        for mod, deps in _graph().items()
        if mod.split(".")[0] == floor
        for dep in deps
        if dep.split(".")[0] in later
    )
    assert not bad, f"{floor} may import only {FLOORS[: FLOORS.index(floor) + 1]}: " + "; ".join(bad)


def test_the_checker_sees_a_later_stage_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from training.train import main\n    import evaluation.fid\n", encoding="utf-8")
    assert {"training.train", "training.train.main", "evaluation.fid"} <= _imports(probe)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    circles = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(mod: str) -> None:
        state[mod] = 1
        path.append(mod)
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                circles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod)
    return circles


def test_the_circle_finder_finds_a_circle():
    # the refine <-> train circle this layout removed (refine.main called train.main)
    graph = {"training.refine": {"training.train"}, "training.train": {"training.refine", "common.fileio"},
             "common.fileio": set()}  # fmt: skip
    assert _circles(graph) == [["training.refine", "training.train", "training.refine"]]


def test_no_two_modules_import_each_other():
    circles = _circles(_graph())
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)
