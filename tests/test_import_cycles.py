"""No two core modules import each other, not even for type hints: every import at a module's top
level counts, those under ``if TYPE_CHECKING:`` included (imports inside functions do not)."""
import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "nram_core"


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module):
    """Import statements outside functions and classes (inside ``if``/``try`` blocks too)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try)):
            pending.extend(node.body + node.orelse + getattr(node, "finalbody", [])
                           + [s for h in getattr(node, "handlers", []) for s in h.body])


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _top_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names)
        # A package's __init__ importing its own modules is no cycle of theirs.
        graph[name] = {t for t in targets if t in paths and t != name and not t.startswith(name + ".")
                       and not name.startswith(t + ".")}
    return graph


def test_no_core_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "nram_core.train" in graph and "nram_core.data.stats" in graph
    cycles = []
    for start in sorted(graph):  # a depth-first search for a path back to each module
        stack, seen = [(start, (start,))], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cycles.append(" -> ".join(path + (start,)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + (nxt,)))
    assert not cycles, cycles
