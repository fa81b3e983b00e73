"""The layout's promises, read from the source: no import cycle between modules, MLflow only behind
`tracking/`, Optuna only behind `sweep/`, and modules small enough to read."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "tunelog"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Absolute names of what a module imports (relative imports resolved); top level only for cycles."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def test_no_import_cycle_at_module_level():
    graph = {m: {i for i in imports(p, True) if i in MODULES and i != m} for m, p in MODULES.items()}
    for m in list(graph):  # importing a.b runs a/__init__ first: a package's own init is not an edge back
        graph[m] = {i for i in graph[m] if not m.startswith(i + ".")}
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == "done":
            return
        assert state.get(m) != "visiting", "import cycle: " + " -> ".join(path[path.index(m) :] + [m])
        state[m] = "visiting"
        for dep in sorted(graph[m]):
            visit(dep, path + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])


def test_only_tracking_imports_mlflow_and_only_sweep_imports_optuna():
    for name, path in MODULES.items():
        used = {i.split(".")[0] for i in imports(path, False)}
        if not name.startswith("tunelog.tracking"):
            assert "mlflow" not in used, f"{name} imports mlflow; only tunelog.tracking may"
        if not name.startswith("tunelog.sweep"):
            assert "optuna" not in used, f"{name} imports optuna; only tunelog.sweep may"


def test_modules_stay_small():
    big = {name: n for name, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    assert set(big) <= {"tunelog.spec"}, big  # the spec's declarations are one long, flat list
