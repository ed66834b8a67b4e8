"""The package's module import graph has no cycles, and only the boundary reads a search space or a schedule by
name: both read from the source with ast, nothing imported."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from pathlib import Path
from typing import Iterable, Mapping

import pytest

PACKAGE = "x3dsearch"
LOADERS = ("load_schedule", "load_space")
# what may read a space or a schedule by name: the CLI's handlers, the run spec's resolution, the loaders' modules
BOUNDARY = {f"{PACKAGE}.commands", f"{PACKAGE}.runspec", f"{PACKAGE}.schedule", f"{PACKAGE}.space"}


def package_modules(name: str, folder: Path) -> dict[str, Path]:
    """Source file of every module of the package ``name`` in ``folder`` (a package as its ``__init__.py``)."""
    modules = {name: folder / "__init__.py"}
    for info in pkgutil.iter_modules([str(folder)]):
        dotted = f"{name}.{info.name}"
        if info.ispkg:
            modules.update(package_modules(dotted, folder / info.name))
        elif (folder / f"{info.name}.py").is_file():
            modules[dotted] = folder / f"{info.name}.py"
    return modules


def _owner(target: str, modules: Mapping[str, Path]) -> str | None:
    """The innermost package module a dotted name lies in (``a.b.Name`` -> ``a.b``), None outside the package."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> list[str]:
    """Dotted names one import statement of module ``name`` loads, relative imports made absolute."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = name.split(".") if is_package else name.split(".")[:-1]
        anchor = parts[:len(parts) - node.level + 1]
        base = ".".join(anchor + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of other package modules, from every import statement in its file (any depth)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        imports = (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))
        owners = {_owner(target, modules) for node in imports
                  for target in _targets(node, name, path.name == "__init__.py")}
        graph[name] = owners - {None, name}
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None if the graph is acyclic (depth-first search)."""
    finished: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if successor in path:
                return path[path.index(successor):] + [successor]
            if successor not in finished and (cycle := visit(successor)):
                return cycle
        finished.add(path.pop())
        return None

    for node in sorted(graph):
        if node not in finished and (cycle := visit(node)):
            return cycle
    return None


def loader_uses(modules: Mapping[str, Path]) -> dict[str, list[int]]:
    """Lines where each module calls, imports or names a loader (``load_space``, ``schedule.load_schedule``, ...)."""
    uses: dict[str, list[int]] = {}
    for name, path in modules.items():
        lines = sorted({node.lineno for node in ast.walk(ast.parse(path.read_text(), str(path)))
                        if isinstance(node, ast.Name) and node.id in LOADERS
                        or isinstance(node, ast.Attribute) and node.attr in LOADERS
                        or isinstance(node, ast.ImportFrom) and any(a.name in LOADERS for a in node.names)})
        if lines:
            uses[name] = lines
    return uses


@pytest.fixture
def old_layout(tmp_path: Path) -> dict[str, Path]:
    """A throwaway package ``pkg`` with the two cycles issue 17 removed, written with every kind of import.

    The config's method imported the exporter, and the cache imported the dataset that opens it.
    """
    files = {
        "__init__.py": "from .config import X3DConfig\n",
        "config.py": "import json\n\nclass X3DConfig:\n    def from_pyslowfast(self, source):\n"
                     "        from .export import from_pyslowfast\n",
        "export.py": "from pkg.config import X3DConfig\n",
        "data/__init__.py": "from . import cache\nfrom .kinetics import VideoDataset\n",
        "data/kinetics.py": "from ..config import X3DConfig\n\ndef dataset():\n    from .cache import ClipCache\n",
        "data/cache.py": "import pkg.data.kinetics\n",
    }
    for relative, source in files.items():
        path = tmp_path / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return package_modules("pkg", tmp_path / "pkg")


def test_package_has_no_import_cycle() -> None:
    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.origin is not None
    modules = package_modules(PACKAGE, Path(spec.origin).parent)
    assert {f"{PACKAGE}.config", f"{PACKAGE}.data.cache", f"{PACKAGE}.data.kinetics"} <= set(modules)
    cycle = find_cycle(import_graph(modules))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_find_cycle_on_small_graphs() -> None:
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_graph_reads_relative_absolute_and_function_level_imports(old_layout: dict[str, Path]) -> None:
    assert import_graph(old_layout) == {
        "pkg": {"pkg.config"}, "pkg.config": {"pkg.export"}, "pkg.export": {"pkg.config"},
        "pkg.data": {"pkg.data.cache", "pkg.data.kinetics"},
        "pkg.data.kinetics": {"pkg.config", "pkg.data.cache"}, "pkg.data.cache": {"pkg.data.kinetics"},
    }


def test_the_cycles_issue_17_removed_are_found(old_layout: dict[str, Path]) -> None:
    graph = import_graph(old_layout)
    assert find_cycle(graph) == ["pkg.config", "pkg.export", "pkg.config"]
    graph["pkg.config"].clear()
    assert find_cycle(graph) == ["pkg.data.cache", "pkg.data.kinetics", "pkg.data.cache"]
    graph["pkg.data.cache"].clear()
    assert find_cycle(graph) is None


def test_only_the_boundary_reads_spaces_and_schedules_by_name() -> None:
    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.origin is not None
    modules = package_modules(PACKAGE, Path(spec.origin).parent)
    assert BOUNDARY <= set(modules)
    outside = {name: lines for name, lines in loader_uses(modules).items() if name not in BOUNDARY}
    assert outside == {}, f"load_schedule/load_space outside {sorted(BOUNDARY)} (module: lines): {outside}"


def test_loader_uses_finds_calls_imports_and_aliases(tmp_path: Path) -> None:
    files = {"__init__.py": "", "a.py": "from .schedule import load_schedule as named\n\nnamed('x')\n",
             "b.py": "from . import space\n\n\ndef f():\n    return space.load_space('y')\n",
             "c.py": "def load():\n    return 'load_space'\n"}
    for relative, source in files.items():
        (tmp_path / "pkg").mkdir(exist_ok=True)
        (tmp_path / "pkg" / relative).write_text(source)
    assert loader_uses(package_modules("pkg", tmp_path / "pkg")) == {"pkg.a": [1], "pkg.b": [5]}
