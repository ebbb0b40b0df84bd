"""The import structure the architecture promises: layers only import downwards (the contract in
pyproject.toml, checked by import-linter), and no module imports itself back through others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def _import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
    return cycles


def test_layers_contract_is_kept() -> None:
    # In a child process: import-linter reconfigures logging and disables every logger that
    # exists, which would silence the broker's loggers for the tests that run after this one.
    run = subprocess.run(
        [sys.executable, "-c", _LINT, str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, (
        "an import crosses the layers in pyproject.toml [tool.importlinter]:\n" + run.stdout
    )


_LINT = (
    "import sys; from importlinter import cli; "
    "sys.exit(cli.lint_imports(config_filename=sys.argv[1], no_cache=True))"
)


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("odradek", exclude_type_checking_imports=True, cache_dir=None)
    assert _import_cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert _import_cycles(graph) == [["a.x", "a.y"]]
