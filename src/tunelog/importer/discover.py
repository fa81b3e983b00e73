"""Where the runs are in a tree someone's training left on disk: found by layout, at any depth.

A folder is a run where a reader's signature is (its `signature` on a shallow view: the folder's own
files and its `checkpoint-N/` folders): a `trainer_state.json` or results file, the newest checkpoint's
state when only checkpoints exist, a Lightning `version_N/`, a kohya log, an events file. Below a run
nothing else is looked for (checkpoints, TensorBoard copies and configs are points and parts of it).
A weak signature (a lone config or eval file) is a run only where no run lies below it; beside runs
below it is said and skipped, never a phantom run. A config whose only runs below are bare events
folders (`args.json` + `runs/exp/events...`) is one run with them.

Each run is named by its path under ROOT and belongs to a project, so lineage and lessons stay inside
the project that wrote them: where every run is ROOT itself or a folder directly under it, ROOT is one
project (a folder of run folders); where some lie deeper, ROOT is a tree of projects and each run's
project is its first folder under ROOT. `import --project NAME` says it outright.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..records.base import CHECKPOINT, RUN, WEAK, Folder, Reader

MAX_WALK_DEPTH = 12  # folder levels below ROOT looked into for runs
FILE_STORE = (
    "an MLflow file store, runs MLflow wrote itself: `mlflow migrate-filestore --source {path} --target "
    "sqlite:///imported.db` keeps them whole, then `tunelog changelog` with MLFLOW_TRACKING_URI=sqlite:///imported.db"
)
NESTED_SIGNS = ("hf-trainer", "llamafactory", "lightning", "trl-csv", "kohya")  # a run of its own inside another
_NOT_RUNS = {"__pycache__", "node_modules", "site-packages"}  # never a run folder, never walked


@dataclass(frozen=True)
class Found:
    path: Path
    name: str  # the path under ROOT (POSIX); ROOT's own name when ROOT is the run
    project: str
    signs: tuple[str, ...]  # the readers whose signature made it a run
    inner: tuple[Path, ...] = ()  # runs inside this run's folder (a project's sub-models): not its files


@dataclass
class Discovery:
    runs: list[Found] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path under ROOT, why)


def discover(root: Path, chain: list[Reader]) -> Discovery:
    """Every run folder under `root` (ROOT itself when it is one), in path order."""
    root = Path(root)
    out = Discovery()
    runs = _visit(root, root, root.resolve(), chain, out, 0)
    if not runs and root.is_dir() and not out.skipped:
        files = sum(len(f) for _, _, f in os.walk(root))
        out.skipped.append((root.name, f"no run found ({files} files, none a known layout)"))
    flat = all("/" not in f.name for f in runs)  # a folder of run folders: one project, ROOT's
    out.runs = sorted((replace(f, project=root.name) if flat else f for f in runs), key=lambda f: f.name)
    return out


def _visit(path: Path, root: Path, real_root: Path, chain: list[Reader], out: Discovery, depth: int) -> list[Found]:
    if _mlflow_file_store(path):  # runs MLflow wrote: MLflow's own migration keeps every field of them
        out.skipped.append((_name(path, root), FILE_STORE.format(path=path)))
        return []
    view = Folder(path, root, shallow=True)
    signs = {reader.name: reader.signature(view) for reader in chain}
    strong = tuple(name for name, sign in signs.items() if sign == RUN)
    if strong:  # a run; a trainer's record below it (each sub-model of a project) is a run of its own
        inner = [
            f
            for child in _subfolders(path, real_root)
            if depth < MAX_WALK_DEPTH
            for f in _visit(child, root, real_root, chain, Discovery(), depth + 1)
            if _own_run(f)
        ]
        return [replace(_found(path, root, strong), inner=tuple(f.path for f in inner)), *inner]
    below: list[Found] = []
    for child in _subfolders(path, real_root) if depth < MAX_WALK_DEPTH else []:
        found = _visit(child, root, real_root, chain, out, depth + 1)
        said = _name(child, root)
        if not found and path == root and not any(s == said or s.startswith(f"{said}/") for s, _ in out.skipped):
            files = sum(len(f) for _, _, f in os.walk(child))
            out.skipped.append((_name(child, root), f"no run found ({files} files, none a known layout)"))
        below += found
    weak = tuple(name for name, sign in signs.items() if sign == WEAK)
    if weak and (not below or all(f.signs == ("tensorboard",) for f in below)):
        return [_found(path, root, weak + (("tensorboard",) if below else ()))]
    if weak:
        files = ", ".join(sorted(rel for rel in view.files if "/" not in rel))[:200]
        out.skipped.append((_name(path, root), f"{files} beside {len(below)} run(s) below it: not a run of its own"))
    return below


def _mlflow_file_store(path: Path) -> bool:
    """An `mlruns/` file store: experiment folders (`0/`, `977040650095363724/`) with a `meta.yaml` each."""
    try:
        return any(d.is_dir() and d.name.isdigit() and (d / "meta.yaml").is_file() for d in path.iterdir())
    except OSError:
        return False


def _own_run(found: Found) -> bool:
    """A run inside a run's folder that is no part of it: a trainer's own record, not the outer run's
    TensorBoard logs (`runs/`), W&B log (`wandb/`) or a lone config."""
    return bool(set(found.signs) & set(NESTED_SIGNS))


def _subfolders(path: Path, real_root: Path) -> list[Path]:
    """Folders to look into: no checkpoint (a point of its run), no hidden or tool folder, no symlink out."""
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return []
    out = []
    for p in entries:
        if not p.is_dir() or p.name.startswith(".") or p.name in _NOT_RUNS or CHECKPOINT.match(p.name):
            continue
        if p.is_symlink() and not p.resolve().is_relative_to(real_root):
            continue
        out.append(p)
    return out


def _name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return root.name if rel == "." else rel


def _found(path: Path, root: Path, signs: tuple[str, ...]) -> Found:
    name = _name(path, root)
    return Found(path=path, name=name, project=name.split("/", 1)[0], signs=signs)
