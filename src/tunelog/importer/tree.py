"""`import`: every run folder of a tree read by the readers that know its layout, merged, written once.

One run per folder below ROOT (ROOT itself when it is one run: an HF output folder, a Lightning log
folder). Each reader that detects its files reads them (`READERS` order: eval files, HF Trainer,
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
from ..logparse import LogParser
from ..outcomes import truncation
from ..tracking.run import param_value
from .base import SEVERITY, Folder, Reader, ReadError, Reading
from .evalfiles import EvalFilesReader
from .generic import GenericReader
from .hf_trainer import HFTrainerReader
from .kohya import KohyaReader
from .lightning import LightningReader
from .tensorboard import TensorBoardReader

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
_MAXIMIZED = re.compile(r"(?i)score|acc|f1|bleu|rouge|auc|clip|psnr|ssim|precision|recall|map\b|reward|win")
_MINIMIZED = re.compile(r"(?i)loss|err|wer|cer|per\b|per_|ppl|perplex|fid|mse|mae|rmse|lpips")
_COUNT = re.compile(r"(?i)^(?:n|num|count|total|number)_|_(?:count|total|runtime|seconds|time)$")
_NAME_CHARS = re.compile(r"[^\w.\- :/]")
_ROOT_RUN_FILES = ("trainer_state.json", "all_results.json", "adapter_config.json", "metrics.csv")
BATCH = 250  # runs written per transaction
HASHED_WHOLE = 1 << 20  # larger files (checkpoints, event files) are keyed by size and their first bytes


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already imported
    warnings: list[str] = field(default_factory=list)


@dataclass
class Legacy:
    folder: Path
    reading: Reading
    by_reader: dict[str, Reading]
    key: str


def readers(patterns: tuple[str, ...] = (), metrics_files: tuple[str, ...] = ()) -> list[Reader]:
    """The readers in the order they read a folder (earlier ones win what two of them find)."""
    return [
        EvalFilesReader(metrics_files),
        HFTrainerReader(),
        LightningReader(),
        KohyaReader(),
        TensorBoardReader(),
        GenericReader(LogParser(patterns)),
    ]


def read_folder(path: Path, root: Path, chain: list[Reader], warnings: list[str]) -> Legacy:
    """Raises ReadError (one line) when a file the folder's layout needs cannot be used."""
    folder = Folder(path, root)
    warnings.extend(f"{path.name}: {why}" for why in folder.refused)
    by_reader = {}
    for reader in chain:
        if reader.detect(folder):
            by_reader[reader.name] = reader.read(folder)
    reading = merge(list(by_reader.values()))
    if not reading.series and not reading.final:
        raise ReadError(reading.problem or f"no run found ({len(folder.files)} files, none a known layout)")
    return Legacy(path, reading, by_reader, _key(path.name, reading.files))


def merge(readings: list[Reading]) -> Reading:
    """One reading: the first reader's param, series or result wins; the worst outcome wins."""
    out = Reading()
    seen_series: set[str] = set()
    for r in readings:
        for k, v in r.params.items():
            out.params.setdefault(k, v)
        out.identity |= r.identity
        keys = {p[0] for p in r.series} - seen_series
        out.series += [p for p in r.series if p[0] in keys]
        seen_series |= keys
        for k, v in r.final.items():
            out.final.setdefault(k, v)
        if r.outcome and (out.outcome is None or SEVERITY[r.outcome[0]] > SEVERITY[out.outcome[0]]):
            out.outcome = r.outcome
        out.lineage += r.lineage
        out.eval_key = out.eval_key or r.eval_key
        out.max_step = max(filter(None.__ne__, (out.max_step, r.max_step)), default=None)
        out.first_ms = min(filter(None.__ne__, (out.first_ms, r.first_ms)), default=None)
        out.last_ms = max(filter(None.__ne__, (out.last_ms, r.last_ms)), default=None)
        out.files += [f for f in r.files if f not in out.files]
        out.note = out.note or r.note
        for k, v in r.tags.items():
            out.tags.setdefault(k, v)
        out.problem = out.problem or r.problem
    out.identity &= set(out.params)
    return out


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


def run_folders(root: Path) -> list[Path]:
    """ROOT itself when it holds one run's own files, else its subfolders (none through a symlink out)."""
    if any((root / name).is_file() for name in _ROOT_RUN_FILES) or (root / "lightning_logs").is_dir():
        return [root]
    real = root.resolve()
    out = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and (not p.is_symlink() or p.resolve().is_relative_to(real)):
            out.append(p)
    return out


def mlflow_name(key: str) -> Optional[str]:
    """A metric or param name MLflow accepts (`train//loss` -> `train/loss`), or None when nothing is left."""
    parts = [p for p in _NAME_CHARS.sub("_", key.strip()).split("/") if p not in ("", ".")]
    name = "/".join("__" if p == ".." else p for p in parts)
    return name if name and len(name) <= 250 else None


def direction_of(metric: str) -> str:
    """Lower is better for losses and error rates, higher for scores and accuracies; else lower."""
    if _MINIMIZED.search(metric):
        return t.MINIMIZE
    return t.MAXIMIZE if _MAXIMIZED.search(metric) else t.MINIMIZE


def headline(legacies: list[Legacy]) -> str:
    """The user's eval files' most common number, else the first usual loss any run logged."""
    from_eval = Counter(k for r in legacies for k in r.by_reader.get("eval-files", Reading()).final)
    if from_eval:  # a score before a count (`n_images`), then the most common
        return max(from_eval, key=lambda k: (_metric_like(k), from_eval[k]))
    finals = [_finals(r.reading) for r in legacies]
    return next((m for m in METRIC_CANDIDATES if any(m in f for f in finals)), "loss")


def _metric_like(key: str) -> bool:
    last = key.rsplit("/", 1)[-1]
    return not _COUNT.match(last) and bool(_MAXIMIZED.search(last) or _MINIMIZED.search(last))


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
                warnings.append(f"{legacy.folder.name}: name {key!r} refused by MLflow, {said}")
        return renamed[key]

    r.series = [(fix(k), v, s, ms) for k, v, s, ms in r.series if fix(k)]
    r.final = {fix(k): v for k, v in r.final.items() if fix(k)}
    r.params = {fix(k): v for k, v in r.params.items() if fix(k)}
    r.identity = {fix(k) for k in r.identity if fix(k)}


def _outcome(r: Reading) -> tuple[str, str]:
    if r.outcome and r.outcome[0] in ("oom", "diverged"):
        return r.outcome
    loss = next(((k, v) for k, v, _, _ in r.series if "loss" in k and not math.isfinite(v)), None)
    if loss:
        return "diverged", f"non-finite {loss[0]} ({loss[1]})"
    if r.outcome:
        return r.outcome
    epochs = [v for k, v, _, _ in r.series if k.rsplit("/", 1)[-1] == "epoch"]
    configured = {k: v for k, v in r.params.items() if k not in r.identity}  # a recorded length is no setting
    cut = truncation(configured, r.max_step, epochs[-1] if epochs else None)
    return ("incomplete", cut) if cut else ("ok", "")


def _based_on(legacy: Legacy, names: set[str]) -> Optional[str]:
    """The folder name a lineage hint points at (resume_from: ../baseline/ckpt.pt, a kohya
    network_weights file, an adapter's base model path)."""
    for value in legacy.reading.lineage:
        for part in Path(value).parts:
            if part in names and part != legacy.folder.name:
                return part
    return None


def _metrics(r: Reading, start: int, end: int) -> list[tuple[str, float, int, int]]:
    """(key, value, ms, step): the series, then each result at the run's last step (one past a
    series' last point when the result differs from it)."""
    out = [(k, v if math.isfinite(v) else float("nan"), ms if ms is not None else start, s) for k, v, s, ms in r.series]
    last: dict[str, tuple[int, float]] = {}
    for k, v, s, _ in r.series:
        if k not in last or s >= last[k][0]:
            last[k] = (s, v)
    top = r.max_step or 0
    for k, v in r.final.items():
        if k in last and (last[k][1] == v or (math.isnan(v) and math.isnan(last[k][1]))):
            continue
        step = max(top, last[k][0] + 1) if k in last else top
        out.append((k, v if math.isfinite(v) else float("nan"), end, step))
    return out


def import_tree(
    root: Path,
    tracker: t.Tracker,
    experiment: str,
    metric: Optional[str] = None,
    patterns: tuple[str, ...] = (),
    direction: Optional[str] = None,
    metrics_files: tuple[str, ...] = (),
    ignore_keys: tuple[str, ...] = (),
) -> ImportReport:
    report, chain = ImportReport(), readers(patterns, metrics_files)
    root = Path(root)
    legacies: list[Legacy] = []
    for folder in run_folders(root):
        try:
            legacies.append(read_folder(folder, root, chain, report.warnings))
        except (ReadError, OSError) as exc:
            report.warnings.append(f"{folder.name}: skipped: {exc}".splitlines()[0])
    for legacy in legacies:
        _clean_names(legacy, report.warnings)
        legacy.reading.identity |= {k for k in legacy.reading.params if any(fnmatchcase(k, g) for g in ignore_keys)}
    metric = metric or headline(legacies)
    direction = direction or direction_of(metric)
    names = {r.folder.name for r in legacies}
    earlier = tracker.find_runs(experiment, {t.TAG_KIND: t.KIND_IMPORT})
    run_ids = {r.tags.get(t.TAG_NAME): r.run_id for r in earlier}
    done = {r.tags.get(t.TAG_IMPORT_KEY) for r in earlier}
    starts = {r.folder: r.reading.first_ms or int(r.folder.stat().st_mtime * 1000) for r in legacies}
    batch: list[t.FinishedRun] = []
    for legacy in sorted(legacies, key=lambda r: (starts[r.folder], r.folder.name)):  # parents before children
        if legacy.key in done:
            report.skipped.append(legacy.folder.name)
            continue
        run_ids[legacy.folder.name] = uuid.uuid4().hex  # chosen here, so a child names its parent in one batch
        batch.append(_finished(legacy, run_ids, metric, direction, starts[legacy.folder], names))
        if len(batch) == BATCH:
            _write(tracker, experiment, batch, report)
    _write(tracker, experiment, batch, report)
    return report


def _write(tracker: t.Tracker, experiment: str, batch: list[t.FinishedRun], report: ImportReport) -> None:
    written, refused = tracker.create_finished_runs(experiment, batch)
    for run in batch:
        if run.run_id in written:
            report.imported.append(run.name)
        else:
            report.warnings.append(f"{run.name}: not imported: {refused.get(run.run_id, 'refused by the store')}")
    batch.clear()


def _finished(legacy: Legacy, run_ids: dict, metric: str, direction: str, start: int, names: set) -> t.FinishedRun:
    r = legacy.reading
    outcome, reason = _outcome(r)
    parent = _based_on(legacy, names)
    end = r.last_ms or start
    tags = {
        t.TAG_KIND: t.KIND_IMPORT,
        t.TAG_NAME: legacy.folder.name,
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
        "tunelog.source": str(legacy.folder),
        **r.tags,
    }
    metrics = _metrics(r, start, end)
    final = _finals(r).get(metric)
    if final is not None and math.isfinite(final):
        metrics.append((t.SCORE_METRIC, t.score(final, direction), end, 0))
    return t.FinishedRun(
        run_id=run_ids[legacy.folder.name],
        name=legacy.folder.name,
        start_ms=start,
        end_ms=end,
        status="FINISHED" if outcome == "ok" else "FAILED",
        params={k: param_value(v) for k, v in r.params.items()},
        tags={k: str(v) for k, v in tags.items() if v is not None},
        metrics=metrics,
    )
