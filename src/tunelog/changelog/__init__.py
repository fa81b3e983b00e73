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
from ..vocabulary import Direction, Outcome, spelled_as
from . import lineage, metrics, phases, verdicts
from .model import Anomaly, Changelog, Changes, Effect, Entry, Phase
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


def result_keys(runs: list[RunRecord], metric: str) -> list[str]:
    """The headline's candidates, shown side by side on each run line: every metric some run named as
    its headline, and final metrics of the headline's family (`per_greedy` beside `per_beam`,
    `eval/accuracy` beside `eval/loss`); the headline first."""
    named = {r.tags[t.TAG_METRIC] for r in runs if r.tags.get(t.TAG_METRIC)}
    root = _family(metric)
    keys = {k for r in runs if r.kind not in lineage.CONTAINER_KINDS for k in r.metrics}
    related = {k for k in keys if root and _family(k) == root and not k.startswith(("perf/", "train/", "sweep/"))}
    related |= named & keys
    return [metric] + sorted(related - {metric, t.SCORE_METRIC})[:3]


def _family(key: str) -> str:
    """`eval/loss` -> `eval`, `per_greedy` -> `per`; a key with neither `/` nor `_` has none."""
    for sep in ("/", "_"):
        if sep in key:
            return key.split(sep, 1)[0]
    return ""


def _int_tag(run: RunRecord, tag: str) -> Optional[int]:
    try:
        return int(run.tags[tag])
    except (KeyError, ValueError):
        return None


def _entry(run: RunRecord, metric: str, keys: list[str], group: str) -> Entry:
    duration = (run.end_ms - run.start_ms) / 1000 if run.end_ms and run.start_ms else None
    outcome = run.tags.get(t.TAG_OUTCOME) or (Outcome.OK if run.status == "FINISHED" else Outcome.FAILED)
    return Entry(
        run_id=run.run_id,
        name=run.tags.get(t.TAG_NAME) or run.name,
        kind=run.kind or "run",
        status=run.status,
        outcome=outcome,
        reason=run.tags.get(t.TAG_REASON, ""),
        group=group,
        start_ms=run.start_ms,
        duration_s=duration,
        result=run.metrics.get(metric),
        metrics=dict(sorted(run.metrics.items())),
        peak_mem_gb=run.metrics.get("perf/peak_mem_gb"),
        note=run.tags.get(t.TAG_NOTE, ""),
        config=run.tags.get(t.TAG_CONFIG, ""),
        results={k: run.metrics[k] for k in keys if k in run.metrics},
        eval_key=run.tags.get(t.TAG_EVAL_KEY),
        gpus=_int_tag(run, t.TAG_GPUS),
        container=run.tags.get(t.TAG_PARENT),
        study=run.tags.get(t.TAG_STUDY, ""),
    )


def _link(entry: Entry, parent: Optional[RunRecord], by_id: dict[str, RunRecord], how: str, metric: str) -> None:
    """The entry's parent, and its result when the two compare (same eval set, the parent ended ok)."""
    entry.parent_id = entry.parent_name = entry.parent_result = None
    entry.lineage, entry.comparable = "none", True
    if parent is None:
        return
    entry.parent_id, entry.lineage = parent.run_id, how
    entry.parent_name = parent.tags.get(t.TAG_NAME) or parent.name
    if parent.kind in lineage.CONTAINER_KINDS:  # a trial's sweep, a stage's pipeline: no config to compare
        return
    entry.comparable = parent.tags.get(t.TAG_EVAL_KEY) == entry.eval_key
    if lineage.ended_ok(parent) and entry.comparable:  # no verdict against a crash or another eval set
        entry.parent_result = parent.metrics.get(metric)


def build(
    runs: list[RunRecord],
    experiment: str,
    metric: Optional[str] = None,
    direction: Optional[str] = None,
    verbose: bool = False,
    tolerance: float = verdicts.REPEAT_TOLERANCE,
    phase_names: Optional[dict[str, list[str]]] = None,
) -> Changelog:
    """Records in, the changelog as data out."""
    runs = [r for r in runs if r.kind not in SKIP_KINDS]
    given = metric is not None
    metric, direction = headline(runs, metric, direction)
    metric = spelled_as(metric, {k for r in runs if r.kind not in lineage.CONTAINER_KINDS for k in r.metrics})
    direction = Direction.of(direction)
    by_id = {r.run_id: r for r in runs}
    found = lineage.find_parents(runs)
    groups = phases.assign(runs, phase_names, lineage.changed_keys(by_id, found))
    keys = result_keys(runs, metric)
    entries = [_entry(r, metric, keys, groups[r.run_id]) for r in runs]
    by_entry_id = {e.run_id: e for e in entries}
    for entry in entries:
        parent_id, how = found[entry.run_id]
        _link(entry, by_id.get(parent_id) if parent_id else None, by_id, how, metric)
    _diff_configs(entries, runs, by_id, groups, verbose)
    anomalous = {a.run_id for a in verdicts.anomalies(entries, direction, tolerance)}
    twins = lineage.sane_twins(runs, {e.run_id: e.parent_id for e in entries if e.parent_id}, anomalous)
    for entry in entries:
        if entry.run_id in twins:
            entry.twin_of = entry.parent_name
            _link(entry, by_id[twins[entry.run_id]], by_id, entry.lineage, metric)
        entry.parent_anomalous = entry.parent_id in anomalous and entry.run_id not in twins
    closest = {e.run_id: e.parent_id for e in entries if e.lineage == "closest" and not e.twin_of}
    for run_id, name in lineage.passed_over(runs, closest, anomalous).items():
        by_entry_id[run_id].twin_of = name
    found_anomalies = verdicts.anomalies(entries, direction, tolerance)
    for anomaly in found_anomalies:
        by_entry_id[anomaly.run_id].anomaly.append(anomaly.short)
    main_key = verdicts.main_eval_key(entries)
    best = verdicts.best_entry(entries, direction, main_key)
    if best is not None:
        best.best = True
    other_best = {}
    for key in sorted({e.eval_key for e in entries if e.eval_key != main_key}, key=str):
        if (other := verdicts.best_entry(entries, direction, key)) is not None:
            other_best[str(key)] = other.run_id
    worked, didnt = verdicts.effects(entries, direction)
    chain = verdicts.timeline(entries, best)
    return Changelog(
        experiment=experiment,
        metric=metric,
        direction=direction,
        entries=entries,
        best_id=best.run_id if best else None,
        anomalies=found_anomalies,
        worked=worked,
        didnt=didnt,
        timeline=chain,
        overview=[e.run_id for e in entries if e.config],
        best_config=dict(sorted(by_id[best.run_id].params.items())) if best else {},
        phases=verdicts.phases(entries, direction, lambda a, b: _changes(by_id[a], by_id[b])),
        other_best=other_best,
        timeline_cost_h=verdicts.cost_until(entries, by_entry_id[best.run_id]) if best else None,
        result_keys=keys,
        varying_keys=sorted(lineage.varying_keys([r for r in runs if _holds_a_config(r)])),
        metric_why=metrics.why_this_metric(runs, metric, given),
        other_metrics=metrics.other_results(
            entries, metric, [e for e in entries if verdicts.finished_ok(e) and e.eval_key == main_key]
        ),
    )


def _diff_configs(
    entries: list[Entry], runs: list[RunRecord], by_id: dict[str, RunRecord], groups: dict, verbose: bool
) -> None:
    """Each entry's changes from its parent; "kept" shows only keys that vary among its group's runs."""
    members: dict[str, list[RunRecord]] = {group: [] for group in groups.values()}
    for run in runs:
        if _holds_a_config(run):
            members[groups[run.run_id]].append(run)
    notable = {group: lineage.varying_keys(runs_of) for group, runs_of in members.items()}
    for entry in entries:
        run = by_id[entry.run_id]
        if entry.lineage == "sweep":  # a trial shows the values that vary among its sweep's trials
            entry.changes = Changes(kept={k: run.params[k] for k in sorted(notable[entry.group]) if k in run.params})
            continue
        parent = by_id.get(entry.parent_id) if entry.parent_id else None
        config_parent = parent if parent is not None and parent.kind not in lineage.CONTAINER_KINDS else None
        entry.changes = lineage.diff(config_parent, run, notable[entry.group], verbose)
        if config_parent is not None:
            shown = len(entry.changes.changed) + len(entry.changes.added) + len(entry.changes.kept)
            entry.unchanged = max(0, len(lineage.config_of(run)) - shown)


def _changes(first: RunRecord, best: RunRecord) -> str:
    return lineage.diff(first, best, set(), False).label()


def collect_and_build(tracker: t.Tracker, experiment: str, **options) -> Changelog:
    return build(tracker.all_runs(experiment), experiment, **options)


__all__ = [
    "Anomaly",
    "Changelog",
    "Changes",
    "Effect",
    "Entry",
    "Phase",
    "build",
    "collect_and_build",
    "to_json",
    "to_markdown",
]


def publish_summary(tracker: t.Tracker, experiment: str) -> Changelog:
    """The experiment's description (the first thing its page in the MLflow UI shows) set to the story's
    summary, from the store as it is now; refreshed by `changelog`, `sweep --changelog` and `stages`."""
    log = collect_and_build(tracker, experiment)
    tracker.set_experiment_note(experiment, to_summary(log))
    return log


def _holds_a_config(run: RunRecord) -> bool:
    """A run whose params are a whole config: not a sweep or pipeline container, not a rejected trial
    (it holds only the sampled params, and every other key would look varied)."""
    return run.kind not in lineage.CONTAINER_KINDS and run.tags.get(t.TAG_OUTCOME) != Outcome.REJECTED
