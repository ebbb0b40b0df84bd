"""The shape of ``odradek.cli``'s imports, read from the source with ``ast``: no cycles, the
command modules share ``_common`` instead of importing each other or the entry point, and the
commands that need no librdkafka do not reach it.

Run as a script, it prints the graph (``module -> imports``, every import in the file, at
the top or inside a function).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import odradek.cli

PACKAGE = "odradek.cli"
COMMAND_MODULES = {"serve", "topics", "produce", "consume", "groups", "transactions", "storage"}


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(Path(odradek.cli.__file__).parent.glob("*.py"))}


def _imports(path: Path, known: set[str]) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """The cli modules ``path`` imports, the other top-level packages it imports, and the
    (module, name) pairs it takes from cli modules."""
    local: set[str] = set()
    external: set[str] = set()
    names: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    local.add(alias.name.split(".")[2])
                else:
                    external.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: inside odradek.cli
                module = f"{PACKAGE}.{module}" if module else PACKAGE
            if module == PACKAGE:  # from odradek.cli import topics
                local.update(a.name for a in node.names if a.name in known)
            elif module.startswith(PACKAGE + "."):
                target = module.split(".")[2]
                local.add(target)
                names.update((target, a.name) for a in node.names)
            else:
                external.add(module.split(".")[0])
    return local, external, names


def import_graph() -> dict[str, set[str]]:
    """cli module -> the cli modules it imports."""
    modules = _modules()
    return {m: _imports(p, set(modules))[0] - {m} for m, p in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for n in graph.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def test_the_cli_has_no_import_cycles() -> None:
    graph = import_graph()
    assert set(graph) >= COMMAND_MODULES | {"main", "_common"}
    assert _cycle(graph) is None, _cycle(graph)


def test_only_the_entry_point_imports_the_command_modules() -> None:
    for module, imported in import_graph().items():
        if module != "main":
            assert not imported & (COMMAND_MODULES | {"main"}), module


def test_no_module_takes_a_private_name_from_another() -> None:
    modules = _modules()
    for module, path in modules.items():
        _, _, names = _imports(path, set(modules))
        private = sorted(f"{m}.{n}" for m, n in names if n.startswith("_"))
        assert not private, f"{module} imports {private}"


def test_serve_and_transactions_do_not_reach_librdkafka() -> None:
    modules = _modules()
    graph = import_graph()
    external = {m: _imports(p, set(modules))[1] for m, p in modules.items()}
    for start in ("serve", "transactions", "storage"):
        reached = _reachable(graph, start)
        assert "_kafka" not in reached, start
        assert not any("confluent_kafka" in external[m] for m in reached), start
    assert _reachable(graph, "serve") == {"serve", "_common"}


def test_the_graph_reader_sees_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


if __name__ == "__main__":
    for module, imported in sorted(import_graph().items()):
        sys.stdout.write(f"{module} -> {', '.join(sorted(imported)) or '(none)'}\n")
