"""The layout's promises, read from the source: no import cycle between modules (function-level and
TYPE_CHECKING imports counted), every import resolves, layers only import downwards, `spec/` pure,
MLflow only behind `tracking/`, Optuna only behind `sweep/`, and modules small enough to read."""

import ast
import importlib.util
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
            subs = {f"{base}.{alias.name}" for alias in node.names}
            if not subs <= MODULES.keys():  # `from pkg import module` depends on the module, not on pkg's names
                found.add(base)
            found |= subs
    return found


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def test_no_import_cycle_counting_function_level_and_type_checking_imports():
    graph = {m: {i for i in imports(p, False) if i in MODULES and i != m} for m, p in MODULES.items()}
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
    assert set(big) <= {"tunelog.spec.schema"}, big  # the spec's declarations are one long, flat list


# Lowest first. A module may import its own layer and those below it, never one above. The leaves
# (errors, the vocabulary, util, the trainer registry) import no other tunelog module but each other.
LAYERS = [
    ("tunelog.errors", "tunelog.vocabulary", "tunelog.util", "tunelog.trainers.registry"),
    ("tunelog.spec",),
    ("tunelog.logs",),
    ("tunelog.tracking",),
    ("tunelog.training",),
    ("tunelog.integrations", "tunelog.records", "tunelog.trainers"),
    (
        "tunelog.train",
        "tunelog.stages",
        "tunelog.promote",
        "tunelog.reproduce",
        "tunelog.probe",
        "tunelog.sweep",
        "tunelog.lint",
        "tunelog.importer",
        "tunelog.changelog",
    ),
    ("tunelog.cli", "tunelog"),
]


def layer(name: str) -> int:
    """The layer of a module: its longest matching prefix decides (trainers.registry is a leaf)."""
    best, found = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), i
    assert found is not None, f"{name} is in no layer of tests/test_structure.py"
    return found


def test_no_module_imports_a_layer_above_it():
    wrong = []
    for name, path in MODULES.items():
        for target in imports(path, False):
            if target in MODULES and layer(target) > layer(name):
                wrong.append(f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_every_import_in_the_package_resolves():
    missing = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("tunelog")):
                base = next(iter(sorted(imports_of(node, name, path), key=len)))
                if base not in MODULES:
                    missing.append(f"{name}: {base}")
                    continue
                defined = names_defined(MODULES[base])
                for alias in node.names:
                    if alias.name != "*" and alias.name not in defined and f"{base}.{alias.name}" not in MODULES:
                        missing.append(f"{name}: {base}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("tunelog") and alias.name not in MODULES:
                        missing.append(f"{name}: {alias.name}")
    assert not missing, missing


def imports_of(node: ast.ImportFrom, name: str, path: Path) -> set[str]:
    """The absolute module an ImportFrom names (its base)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    return {base}


def names_defined(path: Path) -> set[str]:
    """Every name a module binds at its top level (defs, classes, assignments, imports, star re-exports)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= {(a.asname or a.name).split(".")[0] for a in node.names}
            if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                star = next(iter(imports_of(node, module_name(path), path)))
                found |= names_defined(MODULES[star]) if star in MODULES else set()
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return found


PURE_SPEC_FORBIDS = ("torch", "transformers", "peft", "mlflow", "optuna", "bitsandbytes", "datasets")


def test_spec_package_stays_pure():
    """`spec/` is the YAML and what it implies: lint and validation never pay for (or need) a framework."""
    for name, path in MODULES.items():
        if name == "tunelog.spec" or name.startswith("tunelog.spec."):
            used = {i.split(".")[0] for i in imports(path, False)}
            assert not used & set(PURE_SPEC_FORBIDS), f"{name} imports {sorted(used & set(PURE_SPEC_FORBIDS))}"


def test_the_root_api_and_the_old_import_paths_users_write_still_work():
    for module, names in {
        "tunelog": ("Spec", "load_spec", "Tracker", "TunelogCallback", "load_model", "Schedule"),
        "tunelog.spec": ("Spec", "load_spec", "flatten", "parse_set_options"),
        "tunelog.tracking": ("Tracker", "RunRecord", "TAG_OUTCOME"),
    }.items():
        assert importlib.util.find_spec(module) is not None
        defined = names_defined(MODULES[module])
        assert all(n in defined or n == "TunelogCallback" for n in names), (module, names)
