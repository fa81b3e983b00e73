"""What data a run read: the eval key (a hash of the eval set: only equal keys compare), the data
manifest (`data_manifest.json`: path, size, sha256 per spec field), MLflow dataset inputs, and on
another machine which files are missing, moved or different (`reproduce`, `load_model`)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Optional

from ..spec import Spec


def eval_key(spec: Spec) -> str | None:
    """A short hash of the eval set's bytes: what the headline was measured on.

    Why: a run scored on a dialect set and one scored on the general set are not better or worse
    than each other, only different; the changelog and promote compare only runs with equal keys.
    None without `data.eval` (or when it cannot be read: the run's own preflight says so)."""
    if not spec.data.eval:
        return None
    path = spec.path(spec.data.eval)
    if path.is_file():  # the manifest's hash of the same file, computed once
        return file_sha256(path)[:12]
    if not path.is_dir():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    try:
        for file in files:
            digest.update(file.relative_to(path).as_posix().encode())
            digest.update(file.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()[:12]


@lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """A file's sha256, read in blocks and remembered per (path, size, mtime) for this process: a sweep's
    trials all record the same data files, and a training set may be gigabytes."""
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def manifest(spec: Spec) -> dict[str, dict]:
    """The data files a run read, by spec field: where they were, their size and a hash. Logged with the
    run (`data_manifest.json`), so that on another machine `reproduce` can say which are missing and
    whether the files it finds are the same."""
    fields = {"data.train": spec.data.train, "data.eval": spec.data.eval}
    fields.update({f"data.extra_eval.{k}": v for k, v in spec.data.extra_eval.items()})
    out = {}
    for field, value in fields.items():
        if not value:
            continue
        path = spec.path(value)
        entry: dict = {"path": str(path), "as_written": str(value)}
        if path.is_file():
            entry.update(bytes=path.stat().st_size, sha256=file_sha256(path))
        out[field] = entry
    return out


def dataset_inputs(spec: Spec) -> list[tuple[str, str, Optional[str]]]:
    """(context, path as written, digest) of the train, eval and extra eval sets: the run's MLflow dataset
    inputs. The eval set's digest is the run's eval key, the one the changelog and promote compare."""
    out: list[tuple[str, str, Optional[str]]] = []
    for context, value in (("train", spec.data.train), ("eval", spec.data.eval), *spec.data.extra_eval.items()):
        if not value:
            continue
        path = spec.path(value)
        if context == "eval":
            digest = eval_key(spec)
        else:
            digest = file_sha256(path)[:12] if path.is_file() else None
        out.append((context if context in ("train", "eval") else f"eval/{context}", str(value), digest))
    return out


def relocated(spec: Spec, recorded: dict[str, dict]) -> dict[str, str]:
    """Overrides for data fields whose logged path (relative to the project root) is not found from this
    folder while the absolute path the run recorded still holds the file: the same machine, started from
    another folder. Another machine's checkout finds the relative paths from its own root."""
    flat = spec.flat_params()
    moves = {}
    for field, entry in recorded.items():
        value = flat.get(field)
        if value in (None, "None") or spec.path(str(value)).exists():
            continue
        if Path(entry["path"]).is_file():
            moves[field] = entry["path"]
    return moves


def missing_data(spec: Spec, recorded: dict[str, dict]) -> list[str]:
    """One line per data file of `recorded` that this machine lacks or holds in another version (and the
    tokenizer file, when the spec names one that is not here)."""
    lines = []
    if spec.model.tokenizer and not spec.path(spec.model.tokenizer).exists():
        lines.append(f"model.tokenizer: {spec.path(spec.model.tokenizer)} not found")
    for field, entry in recorded.items():
        value = spec.flat_params().get(field)
        path = spec.path(str(value)) if value not in (None, "None") else Path(entry["path"])
        if not path.exists():
            digest = f", sha256 {entry['sha256'][:12]}" if entry.get("sha256") else ""
            lines.append(f"{field}: {path} not found (the run read {entry.get('bytes', '?')} bytes{digest})")
        elif entry.get("sha256") and path.is_file():
            if file_sha256(path) != entry["sha256"]:
                lines.append(f"{field}: {path} differs from the file the run read (sha256 {entry['sha256'][:12]})")
    return lines
