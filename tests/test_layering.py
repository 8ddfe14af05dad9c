"""Imports run downward only, and no two modules import each other (README, "Module map").

    entry (cli, doctor, the `swiftserve` package) -> ray -> server -> router -> engine -> scheduler
      -> model_runner -> models -> loader -> layers -> kernels -> _C
    data (config, outputs, sampling_params, scheduler.config): plain dataclasses, importable
      from every layer; they import only the standard library and each other.

Every .py file under src/swiftserve, kernels/, scheduler/ and router/ (mapped onto swiftserve.*
as pyproject.toml's package-dir does) is parsed with `ast`, never imported, so this runs without
torch and in well under a second. What counts:
- Upward imports: every import statement, at module level, inside functions, and under
  `if TYPE_CHECKING:`. A lazy or type-only import still ties the lower layer to the upper one.
- Cycles: the same edges. A function-level import that only dodges an import-time cycle (app.py
  importing the routes that imported app.py) is still a cycle in the design; a type-only one too.
- `from pkg import name` is an edge to pkg.name when that is a module, else to pkg. The parent
  packages Python imports along the way (pkg/__init__.py) are not edges: otherwise every package
  whose __init__ imports its submodules would be a cycle.
One upward edge is allowed by name: model_runner/ may import scheduler/output.py, the dataclasses
the scheduler hands the runner each step (as vLLM v1's SchedulerOutput), and no other scheduler
module. The scheduler's own torch-free rule is tested in tests/scheduler/test_batch_scheduler.py.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Package -> folder, as in pyproject.toml's [tool.setuptools] package-dir.
PACKAGE_DIRS = {
    "swiftserve": ROOT / "src" / "swiftserve",
    "swiftserve.kernels": ROOT / "kernels",
    "swiftserve.scheduler": ROOT / "scheduler",
    "swiftserve.router": ROOT / "router",
}
EXTENSION_MODULES = {"swiftserve._C"}  # built from csrc/, no .py source

# Highest first. A module may import its own layer and the ones below it.
LAYER_ORDER = [
    "entry",
    "ray",  # the optional swiftserve[ray] extra: only the CLI reaches it, and only for --ray
    "server",
    "router",
    "engine",
    "scheduler",
    "model_runner",
    "models",
    "loader",
    "layers",
    "kernels",
    "_C",
    "data",
]
RANK = {layer: len(LAYER_ORDER) - i for i, layer in enumerate(LAYER_ORDER)}

# Module (or package prefix) -> layer; the longest matching prefix wins.
LAYERS = {
    "swiftserve": "entry",  # the package __init__: the public API, lazily reaching into engine/
    "swiftserve.cli": "entry",
    "swiftserve.cli_parser": "entry",
    "swiftserve.doctor": "entry",
    "swiftserve.ray": "ray",
    "swiftserve.server": "server",
    "swiftserve.router": "router",
    "swiftserve.engine": "engine",
    "swiftserve.scheduler": "scheduler",
    "swiftserve.scheduler.config": "data",  # SchedulerConfig, a field of swiftserve.config's EngineConfig
    "swiftserve.model_runner": "model_runner",
    "swiftserve.models": "models",
    "swiftserve.loader": "loader",
    "swiftserve.layers": "layers",
    "swiftserve.kernels": "kernels",
    "swiftserve._C": "_C",
    "swiftserve.config": "data",
    "swiftserve.outputs": "data",
    "swiftserve.sampling_params": "data",
    "swiftserve.structured_outputs": "data",
}

# (importer package prefix, imported module): upward edges allowed by design, see the docstring.
ALLOWED_UPWARD = {("swiftserve.model_runner", "swiftserve.scheduler.output")}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: Path
    line: int
    kind: str  # "module", "function" or "type-checking"

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} ({self.kind}-level)"


def discover_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            # A stray src/swiftserve/kernels/ (say) would be shadowed by the mapped folder.
            if package == "swiftserve" and any(
                name == p or name.startswith(p + ".") for p in PACKAGE_DIRS if p != package
            ):
                continue
            modules[name] = path
    return modules


def layer_of(module: str) -> str | None:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return None if best is None else LAYERS[best]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module):
    """(node, kind) for every import statement, kind being where it runs."""

    def visit(node: ast.AST, kind: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, kind
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, "function")
            elif isinstance(child, ast.If) and _is_type_checking(child.test) and kind == "module":
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), "type-checking")
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), "module")
            else:
                yield from visit(child, kind)

    yield from visit(tree, "module")


def _resolve_relative(module: str, path: Path, node: ast.ImportFrom) -> str:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def collect_edges(modules: dict[str, Path]) -> list[Edge]:
    known = set(modules) | EXTENSION_MODULES
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, kind in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve_relative(module, path, node) if node.level else (node.module or "")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in dict.fromkeys(targets):  # `from m import A, B` is one edge
                # `import swiftserve.x.y` names a module; `import swiftserve.x.y as z` too.
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                if target in known and target != module and target.split(".")[0] == "swiftserve":
                    edges.append(Edge(module, target, path, node.lineno, kind))
    return edges


def upward_violations(edges: list[Edge]) -> list[str]:
    found = []
    for e in edges:
        src, dst = layer_of(e.source), layer_of(e.target)
        if src is None or dst is None or RANK[dst] <= RANK[src]:
            continue
        if any(e.target == t and (e.source + ".").startswith(p + ".") for p, t in ALLOWED_UPWARD):
            continue
        found.append(f"{e.source} ({src}) imports {e.target} ({dst}) at {e.where()}")
    return found


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as the edges around it) per strongly connected component of two or more modules."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the module graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_a_cycle_in(graph, component) for component in sorted(components, key=min)]


def _a_cycle_in(graph: dict[str, dict[str, Edge]], component: set[str]) -> list[Edge]:
    """The shortest cycle through the component's first module (breadth-first within it)."""
    start = min(component)
    came_from: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w, e in sorted(graph.get(v, {}).items()):
                if w not in component:
                    continue
                if w == start:
                    path = [e]
                    while path[0].source != start:
                        path.insert(0, came_from[path[0].source])
                    return path
                if w not in came_from:
                    came_from[w] = e
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle found in the component {sorted(component)}")


def describe(cycle: list[Edge]) -> str:
    """The cycle on one line, then each of its imports with where it is."""
    return " -> ".join([cycle[0].source] + [e.target for e in cycle]) + "".join(
        f"\n    {e.source} -> {e.target} at {e.where()}" for e in cycle
    )


MODULES = discover_modules()
EDGES = collect_edges(MODULES)


# ---------------------------------------------------------------- the real tree


def test_the_walk_finds_every_layer():
    assert len(MODULES) > 80
    assert {layer_of(m) for m in MODULES} >= set(LAYER_ORDER) - {"_C"}
    assert "swiftserve.scheduler.output" in MODULES and "swiftserve.kernels.dispatch" in MODULES


def test_every_module_has_a_layer():
    unmapped = sorted(m for m in MODULES if layer_of(m) is None)
    assert not unmapped, f"map these modules to a layer in LAYERS (tests/test_layering.py): {unmapped}"


def test_imports_run_downward_only():
    violations = upward_violations(EDGES)
    if violations:
        pytest.fail("imports from a lower layer to a higher one:\n  " + "\n  ".join(violations))


def test_no_import_cycles():
    cycles = find_cycles(EDGES)
    if cycles:
        pytest.fail("import cycles:\n  " + "\n  ".join(describe(c) for c in cycles))


def test_the_core_never_imports_the_ray_extra():
    """swiftserve[ray] is optional: nothing below it imports it, nor the `ray` package itself, and
    the CLI reaches it only inside a function (for `--ray`), so `swiftserve launch` never loads it."""
    for e in EDGES:
        if e.target.startswith("swiftserve.ray") and not e.source.startswith("swiftserve.ray"):
            assert e.source == "swiftserve.cli" and e.kind == "function", (
                f"{e.source} imports {e.target} at {e.where()}"
            )
    for module, path in MODULES.items():
        if module.startswith("swiftserve.ray"):
            continue
        for node, _ in _imports(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(n.split(".")[0] == "ray" for n in names if not getattr(node, "level", 0)), (
                f"{module} imports ray: only swiftserve.ray may"
            )


def test_model_runner_sees_only_the_boundary_module_of_the_scheduler():
    seen = {e.target for e in EDGES if e.source.startswith("swiftserve.model_runner")}
    assert {t for t in seen if t.startswith("swiftserve.scheduler")} <= {"swiftserve.scheduler.output"}


def test_data_modules_import_only_the_standard_library_and_each_other():
    """Like the scheduler: what every layer imports stays light (no torch, numpy, tokenizers)."""
    for module, path in MODULES.items():
        if layer_of(module) != "data":
            continue
        for node, _ in _imports(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                ok = name.split(".")[0] in sys.stdlib_module_names or layer_of(name) == "data"
                assert ok, f"{module} imports {name}: a data module imports only the stdlib and data"


# ---------------------------------------------------------------- the checker itself


def _fake_tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    modules = {}
    for name, text in files.items():
        path = tmp_path / (name.replace(".", "_") + ".py")
        path.write_text(text)
        modules[name] = path
    return modules


def _edges(tmp_path: Path, files: dict[str, str], monkeypatch) -> list[Edge]:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    return collect_edges(_fake_tree(tmp_path, files))


def test_checker_flags_upward_imports_at_any_depth(tmp_path, monkeypatch):
    edges = _edges(
        tmp_path,
        {
            "swiftserve.layers.a": "def f():\n    from swiftserve.models.m import X\n",
            "swiftserve.models.m": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from swiftserve.server.s import Y\n",
            "swiftserve.server.s": "from swiftserve.layers import a\n",
            "swiftserve.model_runner.r": "from swiftserve.scheduler.output import Z\n"
            "import swiftserve.scheduler.batch\n",
            "swiftserve.scheduler.output": "",
            "swiftserve.scheduler.batch": "",
        },
        monkeypatch,
    )
    found = upward_violations(edges)
    assert len(found) == 3, found
    assert "swiftserve.layers.a (layers) imports swiftserve.models.m (models)" in found[0]
    assert "function-level" in found[0]
    assert "type-checking-level" in found[1]
    assert "swiftserve.scheduler.batch" in found[2]  # only output.py is allowed


def test_checker_finds_cycles_through_lazy_and_type_only_imports(tmp_path, monkeypatch):
    edges = _edges(
        tmp_path,
        {
            "swiftserve.server.app": "def install():\n    from swiftserve.server import routes\n",
            "swiftserve.server.routes": "from swiftserve.server.app import App\n",
            "swiftserve.server.fine": "from swiftserve.server import app\n",
            "swiftserve.models.a": "from swiftserve.models.b import B\n",
            "swiftserve.models.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from swiftserve.models.c import C\n",
            "swiftserve.models.c": "from . import a\n",
        },
        monkeypatch,
    )
    cycles = sorted(describe(c).splitlines()[0] for c in find_cycles(edges))
    assert cycles == [
        "swiftserve.models.a -> swiftserve.models.b -> swiftserve.models.c -> swiftserve.models.a",
        "swiftserve.server.app -> swiftserve.server.routes -> swiftserve.server.app",
    ]
