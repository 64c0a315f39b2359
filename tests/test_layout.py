"""The package's shape: no import cycles (module-level or inside functions), entry points never import each other,
and every command runs through the one entry helper."""
import ast
from pathlib import Path

import mmengine

PACKAGE = Path(mmengine.__file__).parent
#: the `python -m mmengine.<cmd>` commands that are thin CLIs over the library
ENTRY_POINTS = ("train", "evaluate", "sample", "prepare", "score", "classify", "inspect", "masking_preview")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("mmengine",) + path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its code (functions included)."""
    mods = modules()
    graph = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    graph[name] |= {target} if target in mods else ({base} if base in mods else set())
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and graph["mmengine.train"]  # the walk found the package
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_entry_points_never_import_each_other():
    graph = import_graph()
    commands = {f"mmengine.{c}" for c in ENTRY_POINTS}
    assert commands <= set(graph)
    for command in sorted(commands):
        assert not graph[command] & (commands - {command}), f"{command} imports another command"
    library = {m for m in graph if m not in commands}
    for module in sorted(library):
        assert not graph[module] & commands, f"library module {module} imports a command"


def test_every_command_runs_through_the_one_entry_helper():
    for command in ENTRY_POINTS:
        text = (PACKAGE / f"{command}.py").read_text(encoding="utf-8")
        assert "cli_entry(" in text, f"mmengine.{command} does not use cli_entry"
