"""The import picture of vitlab: no module-level import circles, and no import (top-level or deferred) from a
lower layer into a higher one.

Layers, lowest first (a package may import its own layer and every layer below it). A registry that names
its target by a ``"module:attr"`` string is not an import, so it may point anywhere (that is how backbone
sources, protocols and report sections stay pluggable).
"""

from __future__ import annotations

import ast
from pathlib import Path

import vitlab

ROOT = Path(vitlab.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


LAYERS = [
    {"vitlab._version", "vitlab.errors", "vitlab._registry", "vitlab._spec", "vitlab._io", "vitlab._cache",
     "vitlab.outputs", "vitlab.record"},                                       # the floor: files, caches, records
    {"vitlab.stats", "vitlab.neighbors", "vitlab._neighbors_tiles", "vitlab._neighbors_faiss",
     "vitlab.metrics"},                                                        # pure math
    {"vitlab.data", "vitlab.backbones"},                                       # sources and backbones
    {"vitlab.store"},                                                          # the one route to features
    {"vitlab.protocols", "vitlab.scorers", "vitlab.mil"},                      # protocols, scorers, MIL heads
    {"vitlab.accel", "vitlab.curation", "vitlab.inspect", "vitlab.generative"},  # features on the store
    {"vitlab.evaluation", "vitlab.comparison"},                                # eval / compare / mil
    {"vitlab.tuning", "vitlab.perf", "vitlab.pretraining", "vitlab.exploration"},       # built on evaluation
    {"vitlab.report"},                                                         # only renders records
    {"vitlab.cli", "vitlab"},                                                  # the surface
]


def _layer(module: str) -> int:
    parts = module.split(".")
    for n in (2, 1):
        key = ".".join(parts[:n])
        for i, group in enumerate(LAYERS):
            if key in group:
                return i
    raise AssertionError(f"{module} is in no layer of LAYERS; add its package there")


def _all_imports() -> list[tuple[str, str, int]]:
    """``(importer, imported, line)`` for every vitlab import anywhere in a module (functions included)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    out = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [base]
            else:
                continue
            out += [(name, t, node.lineno) for t in targets if t == "vitlab" or t.startswith("vitlab.")]
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # top level only: deferred imports are fine
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                # `from pkg import submodule` depends on the submodule; `from pkg import name` on pkg
                targets = [t for t in subs if t in modules] or [base]
                if len(targets) < len(subs):
                    targets.append(base)
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_the_graph_is_read():
    g = _graph()
    assert "vitlab.cli.options" in g["vitlab.cli.eval_cmds"] and "vitlab.record" in g["vitlab.evaluation.run"]


def test_no_module_level_import_circle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_every_package_has_a_layer():
    for importer, imported, _ in _all_imports():
        _layer(importer), _layer(imported)


def test_no_lower_layer_imports_a_higher_one_even_lazily():
    bad = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)}) at line {line}"
           for a, b, line in _all_imports() if _layer(b) > _layer(a)]
    assert not bad, "\n".join(bad)
