"""`changelog`: the run-evolution story, written from the tracking store.

Four layers, each unaware of the next: collect (tracking.Tracker.all_runs), diff
(`lineage`), judge (`verdicts`), render (`render`). Tests check the data; the
Markdown is a view of it. The same store gives byte-identical output.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from .. import tracking as t
from ..tracking import RunRecord
from . import lineage, verdicts
from .model import Anomaly, Changelog, Changes, Effect, Entry
from .render import to_json, to_markdown, to_summary

SKIP_KINDS = {t.KIND_CHANGELOG}


def headline(runs: list[RunRecord], metric: Optional[str], direction: Optional[str]) -> tuple[str, str]:
    """The metric the runs name most often (tag tunelog.metric), unless one is given."""
    named = Counter(r.tags[t.TAG_METRIC] for r in runs if r.tags.get(t.TAG_METRIC))
    metric = metric or (named.most_common(1)[0][0] if named else "eval/loss")
    dirs = Counter(
        r.tags[t.TAG_DIRECTION] for r in runs if r.tags.get(t.TAG_METRIC) == metric and r.tags.get(t.TAG_DIRECTION)
    )
    return metric, direction or (dirs.most_common(1)[0][0] if dirs else t.MINIMIZE)


def _group(run: RunRecord, by_id: dict[str, RunRecord]) -> str:
    if run.tags.get(t.TAG_PHASE):
        return f"Phase: {run.tags[t.TAG_PHASE]}"
    container = by_id.get(run.tags.get(t.TAG_PARENT, ""))
    if container is not None and container.kind in (t.KIND_SWEEP, t.KIND_PIPELINE):
        return f"{container.kind.capitalize()}: {container.tags.get(t.TAG_NAME) or container.name}"
    return "Runs"


def _entry(run: RunRecord, metric: str, by_id: dict[str, RunRecord]) -> Entry:
    duration = (run.end_ms - run.start_ms) / 1000 if run.end_ms and run.start_ms else None
    outcome = run.tags.get(t.TAG_OUTCOME) or ("ok" if run.status == "FINISHED" else "failed")
    return Entry(
        run_id=run.run_id,
        name=run.tags.get(t.TAG_NAME) or run.name,
        kind=run.kind or "run",
        status=run.status,
        outcome=outcome,
        reason=run.tags.get(t.TAG_REASON, ""),
        group=_group(run, by_id),
        start_ms=run.start_ms,
        duration_s=duration,
        result=run.metrics.get(metric),
        metrics=dict(sorted(run.metrics.items())),
        peak_mem_gb=run.metrics.get("perf/peak_mem_gb"),
        note=run.tags.get(t.TAG_NOTE, ""),
        config=run.tags.get(t.TAG_CONFIG, ""),
    )


def build(
    runs: list[RunRecord],
    experiment: str,
    metric: Optional[str] = None,
    direction: Optional[str] = None,
    verbose: bool = False,
    tolerance: float = verdicts.REPEAT_TOLERANCE,
) -> Changelog:
    """Records in, the changelog as data out."""
    runs = [r for r in runs if r.kind not in SKIP_KINDS]
    metric, direction = headline(runs, metric, direction)
    by_id = {r.run_id: r for r in runs}
    parents = lineage.find_parents(runs)
    notable = lineage.varying_keys([r for r in runs if r.kind not in lineage.CONTAINER_KINDS])
    entries = []
    for run in runs:
        entry = _entry(run, metric, by_id)
        parent_id, how = parents[run.run_id]
        parent = by_id.get(parent_id) if parent_id else None
        if parent is not None:
            entry.parent_id, entry.lineage = parent.run_id, how
            entry.parent_name = parent.tags.get(t.TAG_NAME) or parent.name
            parent_ok = parent.tags.get(t.TAG_OUTCOME, "ok") == "ok" and parent.status == "FINISHED"
            entry.parent_result = parent.metrics.get(metric) if parent_ok else None  # no verdict against a crash
        config_parent = parent if parent is not None and parent.kind not in lineage.CONTAINER_KINDS else None
        entry.changes = lineage.diff(config_parent, run, notable, verbose)
        entries.append(entry)
    best = verdicts.best_entry(entries, direction)
    if best is not None:
        best.best = True
    worked, didnt = verdicts.effects(entries, direction)
    return Changelog(
        experiment=experiment,
        metric=metric,
        direction=direction,
        entries=entries,
        best_id=best.run_id if best else None,
        anomalies=verdicts.anomalies(entries, direction, tolerance),
        worked=worked,
        didnt=didnt,
        timeline=verdicts.timeline(entries, best),
        overview=[e.run_id for e in entries if e.config],
        best_config=dict(sorted(by_id[best.run_id].params.items())) if best else {},
    )


def collect_and_build(tracker: t.Tracker, experiment: str, **options) -> Changelog:
    return build(tracker.all_runs(experiment), experiment, **options)


__all__ = ["Anomaly", "Changelog", "Changes", "Effect", "Entry", "build", "collect_and_build", "to_json", "to_markdown"]


def publish_summary(tracker: t.Tracker, experiment: str) -> Changelog:
    """The experiment's description (the first thing its page in the MLflow UI shows) set to the story's
    summary, from the store as it is now; refreshed by `changelog`, `sweep --changelog` and `stages`."""
    log = collect_and_build(tracker, experiment)
    tracker.set_experiment_note(experiment, to_summary(log))
    return log
