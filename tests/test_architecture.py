"""The package's shape (issue 34), read from the source's import graph: layers point down, no circles, and no
module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from castlib.config import REPO_ROOT

PACKAGE = REPO_ROOT / "castlib"

# Lowest first: a module may import from its own layer and the ones before it, never from a later one.
LAYERS = (
    ("base", ("castlib", "castlib.errors", "castlib.config", "castlib.io", "castlib.paper", "castlib.global_batch",
              "castlib.distributed", "castlib.machine")),
    ("data", ("castlib.data",)),
    ("models", ("castlib.models",)),
    ("losses", ("castlib.losses",)),
    ("eval", ("castlib.eval",)),
    ("engine", ("castlib.engine",)),
    ("baselines", ("castlib.baselines",)),
    ("report", ("castlib.report",)),
    ("app", ("castlib.notebooks", "castlib.doctor", "castlib.__main__")),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or (prefix != "castlib" and module.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: add it to LAYERS")
    return best[0]


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` for every castlib import in ``path``, at any depth (lazy imports count)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith("castlib")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("castlib") and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub, [], node.lineno) if sub in known else (node.module, [alias.name], node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {target for target, _, _ in imports(path, known) if target != name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_circle():
    assert cycles(graph()) == []


def test_every_castlib_import_names_a_module_that_exists():
    """A lazy import of a moved module fails only when its function runs; the graph finds it at once."""
    known = modules()
    missing = [f"{name}:{line} imports {target}" for name, path in known.items()
               for target, _, line in imports(path, known) if target not in known]
    assert missing == []


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{source} -> {target} ({LAYERS[layer_of(source)][0]} -> {LAYERS[layer_of(target)][0]})"
              for source, targets in graph().items() for target in targets if layer_of(target) > layer_of(source)]
    assert upward == []


def test_no_private_name_is_used_across_modules():
    """``from castlib.x import _name`` and ``x._name`` on an imported castlib module are both reaching in."""
    known = modules()
    found = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases = {}
        for target, names, line in imports(path, known):
            found += [f"{name}:{line} imports {target}.{n}" for n in names if n.startswith("_") and target != name]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("castlib"):
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in known:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert found == []


@pytest.mark.parametrize("source, target", [("castlib.models.student", "castlib.engine.runs"),
                                            ("castlib.engine.plan", "castlib.report.tables")])
def test_the_checks_catch_an_upward_arrow_and_a_circle(source, target):
    """The checks themselves: an added arrow from a lower layer up is caught, and so is the circle it closes."""
    edges = graph()
    assert layer_of(target) > layer_of(source)
    edges[source] = edges[source] | {target}
    edges[target] = edges[target] | {source}
    assert any({source, target} <= set(component) for component in cycles(edges))
