"""The layering of DESIGN.md, checked on the source: a module imports only from its own layer or
below, and no import cycle exists."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
LAYER0 = {"errors", "config", "atomic", "checkpoints", "loop", "progress", "device", "logs", "maps", "emissions",
          "registry"}
LAYERS = {"data": 1, "nets": 2, "detectors": 3, "explain": 4, "metrics": 5, "report": 5, "experiments": 6, "runs": 6,
          "demo": 6, "cli": 7, "cli_grid": 7, "cli_serve": 7, "cli_oe_search": 7, "serve": 7}


def _modules() -> dict[str, set[str]]:
    """module name -> the anomalens modules it imports (anywhere in the file, lazily or not)."""
    files = {".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): f
             for f in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("anomalens"):
                deps |= {node.module} if node.module in files else set()
                deps |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in files}
        graph[name] = deps - {name}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package's public API re-exports every layer
    return 0 if parts[1] in LAYER0 else LAYERS[parts[1]]


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [(m, d) for m, deps in _modules().items() for d in deps
              if _layer(m) is not None and _layer(d) is not None and _layer(d) > _layer(m)]
    assert upward == []


def test_no_import_cycle() -> None:
    graph = _modules()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError(f"import cycle: {' -> '.join(path[path.index(node):] + [node])}")
        if node in done:
            return
        for dep in graph[node]:
            visit(dep, [*path, node])
        done.add(node)

    for module in graph:
        visit(module, [])
