"""`import`: every run folder of a tree read by the readers that know its layout, merged, written once.

Runs are found by layout at any depth (`discover`: a trainer_state.json, a Lightning version, a kohya
log, an events file; ROOT itself when it is one run), each named by its path under ROOT and tagged with
its project (`tunelog.project`). Each reader that detects its files reads them (the order of `readers()`: eval files, HF Trainer,
Lightning, kohya, TensorBoard, then the generic config + log for what none took); the readings merge
with the earlier reader winning a param, a series or a result. Then what holds for every layout:
identity keys marked, metric names MLflow refuses renamed, the outcome judged, the headline chosen,
lineage resolved to the other folders' runs. A folder is keyed by a hash of its name and the files
read, so importing the same tree twice adds nothing.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Optional

from .. import tracking as t
from ..logs.judge import Evidence, judge
from ..logs.parse import LogParser
from ..records import merge, record_points, record_readers
from ..records.base import Folder, Reader, ReadError, Reading
from ..tracking.logger import param_value
from ..vocabulary import Direction, Outcome, names_a_place
from .discover import Discovery, Found, discover
from .evalfiles import EvalFilesReader
from .generic import GenericReader
from .kohya import KohyaReader
from .lightning import LightningReader
from .ludwig import LudwigReader
from .tensorboard import TensorBoardReader
from .trl_csv import TrlCsvReader
from .wandb_offline import WandbOfflineReader

METRIC_CANDIDATES = (
    "eval/loss",
    "eval_loss",
    "val_loss",
    "valid_loss",
    "validation_loss",
    "loss/average",
    "avr_loss",
    "train/loss",
    "loss",
)
_COUNT = re.compile(r"(?i)^(?:n|num|count|total|number)_|_(?:count|total|runtime|seconds|time)$")
_NAME_CHARS = re.compile(r"[^\w.\- :/]")
BATCH = 250  # runs written per transaction
HASHED_WHOLE = 1 << 20  # larger files (checkpoints, event files) are keyed by size and their first bytes


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already imported
    warnings: list[str] = field(default_factory=list)
    not_runs: list[tuple[str, str]] = field(default_factory=list)  # (path under ROOT, why it is no run)
    planned: list[tuple[str, list[str], str]] = field(default_factory=list)  # --dry-run: folder, readers, run


@dataclass
class Legacy:
    folder: Path
    reading: Reading
    by_reader: dict[str, Reading]
    key: str
    name: str = ""  # the path under ROOT
    project: str = ""


def readers(patterns: tuple[str, ...] = (), metrics_files: tuple[str, ...] = ()) -> list[Reader]:
    """The readers in the order they read a folder (earlier ones win what two of them find)."""
    return [
        EvalFilesReader(metrics_files),
        *record_readers(),
        LightningReader(),
        TrlCsvReader(),
        WandbOfflineReader(),
        LudwigReader(),
        KohyaReader(),
        TensorBoardReader(),
        GenericReader(LogParser(patterns)),
    ]


def read_folder(found: Found, root: Path, chain: list[Reader], warnings: list[str]) -> Legacy:
    """Raises ReadError (one line) when a file the folder's layout needs cannot be used."""
    folder = Folder(found.path, root, inner=found.inner)
    warnings.extend(f"{found.name}: {why}" for why in folder.refused)
    by_reader = {}
    for reader in chain:
        if reader.detect(folder):
            by_reader[reader.name] = reader.read(folder)
    warnings.extend(f"{found.name}: {said}" for reading in by_reader.values() for said in reading.warnings)
    reading = merge(list(by_reader.values()))
    if not reading.series and not reading.final:
        raise ReadError(reading.problem or f"no run found ({len(folder.files)} files, none a known layout)")
    return Legacy(found.path, reading, by_reader, _key(found.name, reading.files), found.name, found.project)


def _key(name: str, files: list[Path]) -> str:
    digest = hashlib.sha256(name.encode())
    for file in files:
        size = file.stat().st_size
        if size <= HASHED_WHOLE:
            digest.update(file.read_bytes())
        else:
            with file.open("rb") as f:
                digest.update(f"{file.name}:{size}:".encode() + f.read(1 << 16))
    return digest.hexdigest()[:16]


def mlflow_name(key: str) -> Optional[str]:
    """A metric or param name MLflow accepts (`train//loss` -> `train/loss`), or None when nothing is left."""
    parts = [p for p in _NAME_CHARS.sub("_", key.strip()).split("/") if p not in ("", ".")]
    name = "/".join("__" if p == ".." else p for p in parts)
    return name if name and len(name) <= 250 else None


def direction_of(metric: str) -> Direction:
    """Which way the metric is better, from its name (the one guess: `Direction.guess`)."""
    return Direction.guess(metric)


def headline(legacies: list[Legacy]) -> str:
    """The user's eval files' most common number where most runs have eval files, else the first usual
    loss (`METRIC_CANDIDATES`: eval before train) a quarter of the runs logged: one folder's eval file or
    one run's eval loss never decides the headline of a whole tree."""
    with_eval = [r for r in legacies if r.by_reader.get("eval-files", Reading()).final]
    if with_eval and 2 * len(with_eval) > len(legacies):  # a score before a count (`n_images`), then the most common
        from_eval = Counter(k for r in with_eval for k in r.by_reader["eval-files"].final)
        return max(from_eval, key=lambda k: (_metric_like(k), from_eval[k]))
    finals = [_finals(r.reading) for r in legacies]
    counts = {m: sum(1 for f in finals if m in f) for m in METRIC_CANDIDATES}
    # an eval number before a training loss, where a fair share of the runs have one
    common = next((m for m in METRIC_CANDIDATES if counts[m] and 4 * counts[m] >= len(legacies)), None)
    return common or next((m for m in METRIC_CANDIDATES if counts[m]), "loss")


def _metric_like(key: str) -> bool:
    last = key.rsplit("/", 1)[-1]
    return not _COUNT.match(last) and Direction.names_a_result(last)


def _finals(reading: Reading) -> dict[str, float]:
    out = {k: v for k, v, _, _ in reading.series}
    out.update(reading.final)
    return out


def _clean_names(legacy: Legacy, warnings: list[str]) -> None:
    """Metric and param names MLflow would refuse, renamed (or dropped) with one warning each."""
    r, renamed = legacy.reading, {}

    def fix(key: str) -> Optional[str]:
        if key not in renamed:
            renamed[key] = mlflow_name(key)
            if renamed[key] != key:
                said = f"renamed to {renamed[key]!r}" if renamed[key] else "dropped"
                warnings.append(f"{legacy.name}: name {key!r} refused by MLflow, {said}")
        return renamed[key]

    r.series = [(fix(k), v, s, ms) for k, v, s, ms in r.series if fix(k)]
    r.final = {fix(k): v for k, v in r.final.items() if fix(k)}
    r.params = {fix(k): v for k, v in r.params.items() if fix(k)}
    r.identity = {fix(k) for k in r.identity if fix(k)} | {k for k in r.params if names_a_place(k)}


def _outcome(r: Reading) -> tuple[str, str]:
    """The readers' findings (each judged its own text) with the merged series, judged once more. The
    trainer's own record (a trainer_state at its max_steps) outranks a log's traceback."""
    if r.outcome and r.outcome[0] in (Outcome.OOM, Outcome.DIVERGED):
        return r.outcome
    hint = None if r.trainer_finished and r.outcome and r.outcome[0] == Outcome.FAILED else r.outcome
    loss = next(((k, v) for k, v, _, _ in r.series if "loss" in k and not math.isfinite(v)), None)
    epochs = [v for k, v, _, _ in r.series if is_epoch_counter(k)]
    evidence = Evidence(
        nonfinite=f"non-finite {loss[0]} ({loss[1]})" if loss else None,
        record=hint,
        trainer_finished=r.trainer_finished,
        params={k: v for k, v in r.params.items() if k not in r.identity},  # a recorded length is no setting
        max_step=r.max_step,
        last_epoch=epochs[-1] if epochs else None,
        epoch_base=r.epoch_base,
    )
    return judge(evidence)


def is_epoch_counter(key: str) -> bool:
    """`epoch`, `train/epoch`: the epoch a run reached. `loss/epoch` (kohya: the epoch's mean loss, logged at
    step = the epoch number) is a metric named like a counter, never progress."""
    *prefix, leaf = key.split("/")
    return leaf == "epoch" and not any(Direction.names_a_result(p) or p.startswith("lr") for p in prefix)


def _based_on(legacy: Legacy, runs: dict[tuple[str, str], str]) -> Optional[str]:
    """The run a lineage hint points at (resume_from: ../baseline/ckpt.pt, a kohya network_weights file,
    an adapter's base model path), by folder name inside the same project: never another project's."""
    for value in legacy.reading.lineage:
        for part in Path(value).parts:
            name = runs.get((legacy.project, part))
            if name and name != legacy.name:
                return name
    return None


def _metrics(r: Reading, start: int, end: int) -> list[tuple[str, float, int, int]]:
    """(key, value, ms, step): the series at their times (else the run's start), each result at the end."""
    out = [(k, v, ms if ms is not None else start, s) for k, v, s, ms in r.series]  # ±inf kept: MLflow stores it
    return out + [(k, v, end, s) for k, v, s, is_result in record_points(r) if is_result]


def import_tree(
    root: Path,
    tracker: Optional[t.Tracker],
    experiment: str,
    metric: Optional[str] = None,
    patterns: tuple[str, ...] = (),
    direction: Optional[str] = None,
    metrics_files: tuple[str, ...] = (),
    ignore_keys: tuple[str, ...] = (),
    project: Optional[str] = None,
    dry_run: bool = False,
) -> ImportReport:
    """`project`: one project for every run (a single project's folder imported on its own); else each
    run's first folder under ROOT. `dry_run`: read and plan, write nothing (`report.planned`)."""
    report, chain = ImportReport(), readers(patterns, metrics_files)
    root = Path(root)
    found = discover(root, chain)
    report.not_runs = found.skipped
    legacies = _read_all(found, root, chain, report, project)
    if dry_run:
        report.planned = [(str(r.folder), list(r.by_reader), r.name) for r in legacies]
        return report
    metric = metric or headline(legacies)
    direction = direction or direction_of(metric)
    for legacy in legacies:
        legacy.reading.identity |= {k for k in legacy.reading.params if any(fnmatchcase(k, g) for g in ignore_keys)}
    by_folder = {(r.project, r.folder.name): r.name for r in legacies}
    earlier = tracker.find_runs(experiment, {t.TAG_KIND: t.KIND_IMPORT})
    run_ids = {r.tags.get(t.TAG_NAME): r.run_id for r in earlier}
    done = {r.tags.get(t.TAG_IMPORT_KEY) for r in earlier}
    starts = {r.name: r.reading.first_ms or int(r.folder.stat().st_mtime * 1000) for r in legacies}
    batch: list[t.FinishedRun] = []
    for legacy in sorted(legacies, key=lambda r: (starts[r.name], r.name)):  # parents before children
        if legacy.key in done:
            report.skipped.append(legacy.name)
            continue
        run_ids[legacy.name] = uuid.uuid4().hex  # chosen here, so a child names its parent in one batch
        batch.append(_finished(legacy, run_ids, metric, direction, starts[legacy.name], by_folder))
        if len(batch) == BATCH:
            _write(tracker, experiment, batch, report)
    _write(tracker, experiment, batch, report)
    return report


def _read_all(found: Discovery, root: Path, chain: list[Reader], report: ImportReport, project: Optional[str]):
    legacies: list[Legacy] = []
    for run in found.runs:
        try:
            legacy = read_folder(run, root, chain, report.warnings)
        except (ReadError, OSError) as exc:
            report.warnings.append(f"{run.name}: skipped: {exc}".splitlines()[0])
            continue
        legacy.project = project or legacy.project
        _clean_names(legacy, report.warnings)
        legacies.append(legacy)
    return legacies


def _write(tracker: t.Tracker, experiment: str, batch: list[t.FinishedRun], report: ImportReport) -> None:
    written, refused = tracker.create_finished_runs(experiment, batch)
    for run in batch:
        if run.run_id in written:
            report.imported.append(run.name)
        else:
            report.warnings.append(f"{run.name}: not imported: {refused.get(run.run_id, 'refused by the store')}")
    batch.clear()


def _finished(legacy: Legacy, run_ids: dict, metric: str, direction: str, start: int, runs: dict) -> t.FinishedRun:
    r = legacy.reading
    outcome, reason = _outcome(r)
    parent = _based_on(legacy, runs)
    end = r.last_ms or (start + int(r.runtime_s * 1000) if r.runtime_s else start)
    tags = {
        t.TAG_KIND: t.KIND_IMPORT,
        t.TAG_NAME: legacy.name,
        t.TAG_PROJECT: legacy.project,
        t.TAG_TIME_SOURCE: "log" if r.first_ms is not None else "file times (the files hold no time)",
        t.TAG_IMPORT_KEY: legacy.key,
        t.TAG_OUTCOME: outcome,
        t.TAG_REASON: reason,
        t.TAG_METRIC: metric,
        t.TAG_DIRECTION: direction,
        t.TAG_NOTE: r.note or None,
        t.TAG_BASED_ON: run_ids.get(parent) if parent else None,
        t.TAG_EVAL_KEY: r.eval_key,
        t.TAG_IDENTITY_KEYS: ",".join(sorted(r.identity)) or None,
        t.TAG_IMPORT_READERS: ",".join(legacy.by_reader),
        t.TAG_SOURCE: str(legacy.folder),
        **r.tags,
    }
    metrics = _metrics(r, start, end)
    final = _finals(r).get(metric)
    if final is not None and math.isfinite(final):
        metrics.append((t.SCORE_METRIC, t.score(final, direction), end, 0))
    return t.FinishedRun(
        run_id=run_ids[legacy.name],
        name=legacy.name,
        start_ms=start,
        end_ms=end,
        status="FINISHED" if outcome == Outcome.OK else "FAILED",
        params={k: param_value(v) for k, v in r.params.items()},
        tags={k: str(v) for k, v in tags.items() if v is not None},
        metrics=metrics,
    )
