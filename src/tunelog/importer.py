"""`import`: legacy checkpoint folders turned into MLflow runs, once.

One folder per run: a config (JSON, YAML, or `key=value` / `--key value` args), a log
(parsed by `logparse`), optionally a notes file. The folder name becomes the run name;
the log's timestamps its start and end; a config value pointing at another folder
(`resume_from: ../baseline/ckpt`) becomes its `tunelog.based_on`. Each folder is keyed by
a hash of its name and contents, so importing the same tree twice adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from . import tracking as t
from .logparse import LogParser, ParsedLog
from .outcomes import judge_log
from .spec import flatten

CONFIG_FILES = (
    "args.json",
    "config.json",
    "hparams.json",
    "config.yaml",
    "config.yml",
    "hparams.yaml",
    "args.yaml",
    "args.txt",
    "config.txt",
    "args",
)
LOG_FILES = ("train.log", "training.log", "log.txt", "output.log")
NOTE_FILES = ("notes.md", "NOTES.md", "notes.txt", "NOTES.txt", "README.md")
LINEAGE_KEYS = ("resume", "init_from", "based_on", "from_checkpoint", "load_from", "pretrained_from", "resume_from")
METRIC_CANDIDATES = ("eval/loss", "eval_loss", "val_loss", "valid_loss", "validation_loss", "loss")


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already imported
    warnings: list[str] = field(default_factory=list)


@dataclass
class Legacy:
    folder: Path
    params: dict[str, Any]
    log: ParsedLog
    log_text: str
    note: str
    key: str


def read_config(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text) or {}
    else:
        data = _args(text)
    if not isinstance(data, dict):
        raise ValueError("expected a mapping of settings")
    return flatten(data)


def _args(text: str) -> dict[str, Any]:
    """`key=value` lines, or a command line of `--key value` / `--flag` tokens."""
    out: dict[str, Any] = {}
    tokens = shlex.split(text, comments=True)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if "=" in tok:
            key, value = tok.lstrip("-").split("=", 1)
            out[key] = value
        elif tok.startswith("--"):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt is not None and not nxt.startswith("--"):
                out[tok[2:]] = nxt
                i += 1
            else:
                out[tok[2:]] = "true"
        i += 1
    return out


def _first(folder: Path, names: tuple[str, ...], glob: str | None = None) -> Optional[Path]:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob(glob)) if glob else []
    return found[0] if found else None


def read_folder(folder: Path, parser: LogParser) -> Legacy:
    """Raises ValueError with what is wrong when the folder's config or log cannot be read."""
    config, log_file = _first(folder, CONFIG_FILES), _first(folder, LOG_FILES, "*.log")
    if log_file is None:
        raise ValueError("no log file (train.log, *.log)")
    try:
        params = read_config(config) if config else {}
    except (ValueError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(f"config {config.name}: {exc}".splitlines()[0]) from None
    try:
        log_text = log_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"log {log_file.name} is not text") from None
    log = parser.parse_text(log_text)
    if not log.metric_lines:
        raise ValueError(f"log {log_file.name}: no metric lines in {log.lines} lines")
    note_file = _first(folder, NOTE_FILES)
    digest = hashlib.sha256(folder.name.encode())
    for part in (config, log_file):
        if part:
            digest.update(part.read_bytes())
    return Legacy(
        folder,
        params,
        log,
        log_text,
        note_file.read_text(encoding="utf-8").strip() if note_file else "",
        digest.hexdigest()[:16],
    )


def _based_on(run: Legacy, names: set[str]) -> Optional[str]:
    """The folder name a lineage-like config value points at (resume_from: ../baseline/ckpt.pt)."""
    for key, value in run.params.items():
        if any(k in key.lower() for k in LINEAGE_KEYS) and isinstance(value, str):
            for part in Path(value).parts:
                if part in names and part != run.folder.name:
                    return part
    return None


def import_tree(
    root: Path,
    tracker: t.Tracker,
    experiment: str,
    metric: Optional[str] = None,
    patterns: tuple[str, ...] = (),
    direction: str = t.MINIMIZE,
) -> ImportReport:
    report, parser = ImportReport(), LogParser(patterns)
    legacies: list[Legacy] = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        try:
            legacies.append(read_folder(folder, parser))
        except (ValueError, OSError) as exc:
            report.warnings.append(f"{folder.name}: skipped: {exc}")
    metric = metric or next((m for m in METRIC_CANDIDATES if any(m in r.log.final() for r in legacies)), "loss")
    names = {r.folder.name for r in legacies}
    earlier = tracker.find_runs(experiment, {t.TAG_KIND: t.KIND_IMPORT})
    run_ids = {r.tags.get(t.TAG_NAME): r.run_id for r in earlier}
    done = {r.tags.get(t.TAG_IMPORT_KEY) for r in earlier}
    for run in sorted(legacies, key=lambda r: (r.log.first_ms or 0, r.folder.name)):  # parents before children
        if run.key in done:
            report.skipped.append(run.folder.name)
            continue
        outcome, reason = judge_log(run.log_text, run.log, run.params)
        parent = _based_on(run, names)
        start = run.log.first_ms or int(run.folder.stat().st_mtime * 1000)
        tags = {
            t.TAG_KIND: t.KIND_IMPORT,
            t.TAG_NAME: run.folder.name,
            t.TAG_IMPORT_KEY: run.key,
            t.TAG_OUTCOME: outcome,
            t.TAG_REASON: reason,
            t.TAG_METRIC: metric,
            t.TAG_DIRECTION: direction,
            t.TAG_NOTE: run.note or None,
            t.TAG_BASED_ON: run_ids.get(parent) if parent else None,
            "tunelog.source": str(run.folder),
        }
        metrics = [
            (k, v if math.isfinite(v) else float("nan"), ts if ts is not None else start, step)
            for k, v, step, ts in run.log.series
        ]
        final = next((v for k, v, _, _ in reversed(run.log.series) if k == metric), None)
        if final is not None and math.isfinite(final):
            metrics.append((t.SCORE_METRIC, t.score(final, direction), run.log.last_ms or start, 0))
        run_ids[run.folder.name] = tracker.create_finished_run(
            experiment,
            run.folder.name,
            start,
            run.log.last_ms or start,
            "FINISHED" if outcome == "ok" else "FAILED",
            run.params,
            tags,
            metrics,
        )
        report.imported.append(run.folder.name)
    return report
