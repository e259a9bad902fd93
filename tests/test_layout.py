"""The house's layout, read from the import statements (module level and inside functions alike).

Stages stand on one another in the order the data flows, over one common base: ``common`` <- ``scrapy_ptt`` <-
``curation`` <- ``evaluation`` <- ``training`` (evaluation knows the curated dataset and diffusers' pipeline folder,
never the trainer; the trainer samples and scores through it). A package may import only those below it, and no
two modules may import each other, directly or round a longer circle.

A dotted path in a string (Scrapy's way to name a class in its settings, e.g. ``PTT_PHOTO_FILTER``) is an import
made at run time, so it is read too: it must name a module and attribute that exist, it counts in the circle check,
and where it names a later stage (the crawler's optional photo filter, ``curation.download_filter.PhotoFilter``)
that module is a plug-in: nothing it imports, however far, may lead back into the floor that names it.
"""

from __future__ import annotations

import ast
import re
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


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for floor in FLOORS for p in (ROOT / floor).rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


_DOTTED = re.compile(rf"(?:{'|'.join(FLOORS)})(?:\.\w+)+")


def _dotted_paths(path: Path) -> set[str]:
    """Every string constant of ``path`` that is a whole dotted path into the project (``curation.x.Y``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.fullmatch(node.value)
    }


def _late_bound() -> dict[str, set[tuple[str, str]]]:
    """``{module: {(dotted path, the module it names)}}`` for the dotted paths that name a project module."""
    modules = _modules()
    found: dict[str, set[tuple[str, str]]] = {}
    for name, path in modules.items():
        for dotted in _dotted_paths(path):
            target = dotted if dotted in modules else dotted.rpartition(".")[0]
            if target in modules and target != name:
                found.setdefault(name, set()).add((dotted, target))
    return found


def _top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


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
    graph = _graph()
    for name, refs in _late_bound().items():  # a dotted path loaded at run time closes a circle as well
        graph[name] |= {target for _, target in refs}
    circles = _circles(graph)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_checker_reads_dotted_paths(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        'A = "curation.download_filter.PhotoFilter"  # a comment\nB = "curation is fun"\n', encoding="utf-8"
    )
    assert _dotted_paths(probe) == {"curation.download_filter.PhotoFilter"}
    assert ("curation.download_filter.PhotoFilter", "curation.download_filter") in _late_bound()["scrapy_ptt.settings"]


def test_every_dotted_path_names_what_exists():
    modules = _modules()
    missing = sorted(
        f"{name}: {dotted}"
        for name, refs in _late_bound().items()
        for dotted, target in refs
        if dotted != target and dotted.rpartition(".")[2] not in _top_level_names(modules[target])
    )
    assert not missing, "dotted paths naming nothing: " + "; ".join(missing)


def test_a_later_stage_named_by_dotted_path_is_a_plugin_that_never_leads_back():
    """The crawl may name curation's photo filter (Scrapy loads it only when the filter is switched on), but that
    filter, and everything it imports, must stand on the floors below the crawl's own code: no way back."""
    graph = _graph()
    bad = []
    for name, refs in _late_bound().items():
        floor = name.split(".")[0]
        for dotted, target in refs:
            if FLOORS.index(target.split(".")[0]) > FLOORS.index(floor):
                back = sorted(m for m in _reach(graph, target) | {target} if m.split(".")[0] == floor)
                if back:
                    bad.append(f"{name} names {dotted}, which leads back into {floor}: {', '.join(back)}")
    assert not bad, "; ".join(bad)
