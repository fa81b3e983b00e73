"""W&B offline runs (`wandb/run-DATE-ID/`): `files/config.yaml`, `wandb-summary.json`, `wandb-metadata.json`,
`output.log`, and the run's own record, the binary `run-ID.wandb`.

The history comes from the `.wandb` file read with the wandb SDK's own reader (`DataStore`, its records
parsed by its own protobuf classes): every history row, each value at the step its metric was defined
against (`define_metric(..., step_metric=...)`: the Trainer's `train/global_step`), else W&B's `_step`.
Without the SDK (`pip install 'tunelog[wandb]'`) the config, the summary (as finals) and the times are still
read, and a warning says the history was not. The outcome is the judge's: the exit record's code and the
console's last error line; a log without an exit record ended before the run closed.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Optional

from ..logs.judge import Evidence, judge
from ..records.base import NONE, RUN, Folder, Point, ReadError, Reading, flat, load_structured, number
from ..vocabulary import Outcome

CONFIG, SUMMARY, METADATA, CONSOLE = (
    "files/config.yaml",
    "files/wandb-summary.json",
    "files/wandb-metadata.json",
    "files/output.log",
)
STEP = "_step"  # W&B's own row counter: the step of a metric defined against no other


class WandbOfflineReader:
    name = "wandb"

    def detect(self, folder: Folder) -> bool:
        return bool(_record_file(folder))

    def signature(self, folder: Folder) -> int:
        return RUN if _record_file(folder) else NONE

    def read(self, folder: Folder) -> Reading:
        reading = Reading()
        if CONFIG in folder.files:
            reading.params = _config(folder.text(CONFIG))
            reading.files.append(folder.files[CONFIG])
        summary = folder.data(SUMMARY) if SUMMARY in folder.files else {}
        summary = summary if isinstance(summary, dict) else {}
        read, exit_code, run, counters = _history(folder, _record_file(folder), reading)
        left_out = {p[0] for p in reading.series} | counters  # step metrics are steps, not results
        reading.final = {k: float(v) for k, v in flat(summary, sep="/").items() if _kept(k, v) and k not in left_out}
        reading.final = {k: v for k, v in reading.final.items() if math.isfinite(v)}
        _times(folder, summary, reading)
        reading.tags.update({f"wandb.{k}": v for k, v in run.items() if v})
        lines = folder.text(CONSOLE).splitlines()[-400:] if CONSOLE in folder.files else []
        folder.claimed.update(r for r in (CONFIG, SUMMARY, METADATA, CONSOLE) if r in folder.files)
        reading.params = _unordered(reading.params)
        _judged(reading, lines, exit_code, closed=exit_code is not None or not read)
        return reading


def _record_file(folder: Folder) -> Optional[str]:
    return next(
        (r for r in sorted(folder.files) if "/" not in r and r.startswith("run-") and r.endswith(".wandb")), None
    )


def _config(text: str) -> dict[str, Any]:
    """W&B's config.yaml: `key: {value: ...}` per entry, `_wandb` its own bookkeeping."""
    data = load_structured(text, CONFIG)
    if not isinstance(data, dict):
        raise ReadError(f"{CONFIG}: not a mapping")
    values = {k: v.get("value") if isinstance(v, dict) and "value" in v else v for k, v in data.items()}
    return flat({k: v for k, v in values.items() if not str(k).startswith("_wandb")})


def _unordered(params: dict[str, Any]) -> dict[str, Any]:
    """peft's `target_modules` is a set, which W&B writes as a list in whatever order the set iterated:
    sorted, so two runs of the same modules do not read as a change."""
    return {
        k: sorted(v)
        if k.endswith("target_modules") and isinstance(v, list) and all(isinstance(x, str) for x in v)
        else v
        for k, v in params.items()
    }


def _kept(key: str, value: Any) -> bool:
    """A number the run logged (not W&B's `_runtime`/`_step`/`_timestamp`, not a media or table entry)."""
    return not key.startswith("_") and number(value) is not None


def _history(folder: Folder, rel: Optional[str], reading: Reading) -> tuple[bool, Optional[int], dict, set[str]]:
    """Every history row of the `.wandb` record as points; (whether it was read, the exit code or None with
    no exit record, the run's id, name and project, its step metrics)."""
    try:
        from wandb.proto import wandb_internal_pb2 as pb
        from wandb.sdk.internal.datastore import DataStore
    except ImportError:
        reading.warnings.append("W&B history not read: the wandb SDK reads it (pip install 'tunelog[wandb]')")
        return False, None, {}, set()
    if rel is None:
        return False, None, {}, set()
    path = folder.files[rel]
    reading.files.append(path)
    store = DataStore()
    store.open_for_scan(str(path))
    step_of: dict[str, str] = {}  # metric (or glob `*`) -> the metric it is plotted against
    last: dict[str, float] = {}  # each step metric's latest value
    exit_code: Optional[int] = None
    run: dict[str, str] = {}
    while True:
        try:
            data = store.scan_data()
        except Exception as exc:  # noqa: BLE001 (a log cut off mid-record: what came before still counts)
            reading.warnings.append(f"{rel}: read up to a damaged record ({type(exc).__name__})")
            break
        if data is None:
            break
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "metric" and record.metric.step_metric:
            step_of[record.metric.name or record.metric.glob_name] = record.metric.step_metric
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
            row.setdefault(STEP, str(record.history.step.num))  # the row's own step where it names none
            reading.series += _row(row, step_of, last)
        elif kind == "config" and CONFIG not in folder.files:  # config.yaml is what the SDK wrote of these
            for item in record.config.update:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_wandb"):
                    reading.params.update(flat({key: _json(item.value_json)}))
        elif kind == "run":
            r = record.run
            run = {"run_id": r.run_id, "run_name": r.display_name, "project": r.project}
        elif kind == "exit":
            exit_code = record.exit.exit_code
    steps = [p[2] for p in reading.series]
    reading.max_step = max(steps) if steps else None
    return True, exit_code, run, set(step_of.values())


def _json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _row(row: dict[str, str], step_of: dict[str, str], last: dict[str, float]) -> list[Point]:
    """One history row's numbers at their steps. A row without its step metric is at that metric's last
    value (W&B's `step_sync`, on in the Trainer's `define_metric`); the step metrics are steps, not metrics."""
    values = {key: _json(raw) for key, raw in row.items()}
    counters = set(step_of.values()) | {STEP}
    last.update({k: v for k, v in values.items() if k in counters and isinstance(v, (int, float))})
    stamp = values.get("_timestamp")
    ms = int(stamp * 1000) if isinstance(stamp, (int, float)) else None
    points = []
    for key, value in values.items():
        if key in counters or not _kept(key, value):
            continue
        step = last.get(_counter(key, step_of), last.get(STEP))
        if isinstance(step, (int, float)):
            points.append((key, float(value), int(step), ms))
    return points


def _counter(key: str, step_of: dict[str, str]) -> str:
    """The step metric a key is plotted against: its own `define_metric`, else the most specific glob that
    matches it (`story/*` before `*`), else W&B's `_step`."""
    if key in step_of:
        return step_of[key]
    globs = [g for g in step_of if any(c in g for c in "*?[") and fnmatchcase(key, g)]
    return step_of[max(globs, key=len)] if globs else STEP


def _times(folder: Folder, summary: dict, reading: Reading) -> None:
    """Start from the metadata's `startedAt`, length from the summary's runtime."""
    meta = folder.data(METADATA) if METADATA in folder.files else {}
    started = meta.get("startedAt") if isinstance(meta, dict) else None
    if isinstance(started, str):
        try:
            reading.first_ms = int(datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            reading.warnings.append(f"{METADATA}: startedAt {started!r} is no time")
    runtime = (summary.get("_wandb") or {}).get("runtime") if isinstance(summary.get("_wandb"), dict) else None
    runtime = runtime if isinstance(runtime, (int, float)) else summary.get("_runtime")
    if isinstance(runtime, (int, float)):
        reading.runtime_s = float(runtime)
        if reading.first_ms is not None:
            reading.last_ms = reading.first_ms + int(runtime * 1000)
    if isinstance(meta, dict) and isinstance(meta.get("program"), str):
        reading.tags["wandb.program"] = Path(meta["program"]).name


def _judged(reading: Reading, lines: list[str], exit_code: Optional[int], closed: bool) -> None:
    """The judge's verdict on what only this record says: the exit record's code and the console, or no exit
    record (never closed). How far the series got against the configured length is judged by the import
    with every reader's series merged (`importer.tree`)."""
    never_closed = ("incomplete", "the W&B record has no exit: the process ended before the run closed")
    evidence = Evidence(lines=lines, exit_code=exit_code, record=None if closed else never_closed, where=CONSOLE)
    outcome, reason = judge(evidence)
    if outcome != Outcome.OK:
        reading.outcome = (outcome.value, reason)
