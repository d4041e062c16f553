"""No module-level import circles anywhere in vitlab (AST of every module's top-level imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import vitlab

ROOT = Path(vitlab.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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
    assert "vitlab.cli.options" in g["vitlab.cli.eval_cmds"] and "vitlab.record" in g["vitlab.evaluation"]


def test_no_module_level_import_circle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)
