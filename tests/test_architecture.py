"""The layers of the package (README, "Design"): data flows down one way.

    fronts (sampling, ode, pde, train, quantize, integrations, bench, cli, guidance, data, cde's
            cdeint and models, the package itself)
      -> loop (timestepper.loop: integrate)
        -> solvers (timestepper.solvers: every solver and the registry)
          -> below (timestepper.core, timestepper.diffusion: terms, contracts, controllers,
             schedules, grids, the diffusion term, solutions, status, validation; the control
             paths and the CDE term of timestepper.cde)

Every import in ``src/`` (module level or inside a function; ``if TYPE_CHECKING`` blocks aside) is
read from the source: no module imports a higher layer, and the import graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "timestepper"
LAYERS = [  # (name, module prefixes), from the bottom
    ("below", ("timestepper.core", "timestepper.diffusion", "timestepper._version",
               "timestepper.cde.interpolation", "timestepper.cde.paths", "timestepper.cde.term")),
    ("solvers", ("timestepper.solvers",)),
    ("loop", ("timestepper.loop",)),
    ("fronts", ("timestepper",)),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package that ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1]
                                    + ([base] if base else []))
                for a in child.names:
                    found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != name}


def _layer(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(module)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_module_imports_a_higher_layer():
    bad = [f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]})"
           for a, deps in _graph().items() for b in deps if _layer(b) > _layer(a)]
    assert not bad, "\n".join(sorted(bad))


def test_import_graph_has_no_cycle():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            connect(v)
    assert not cycles, cycles


def test_the_checker_sees_imports():
    graph = _graph()
    assert "timestepper.core.solver" in graph["timestepper.solvers.rk"]
    assert "timestepper.loop.integrate" in graph["timestepper.loop"]
    assert "timestepper.solvers.registry" in graph["timestepper.loop.integrate"]
