"""Judging the history: the best run, anomalies, what worked, the timeline, the overview.

Works on the Entries `build` made; knows nothing of MLflow or Markdown.
"""

from __future__ import annotations

import math
from typing import Optional

from .. import tracking as t
from ..vocabulary import Direction, Outcome
from .model import Anomaly, Effect, Entry, Phase

# a repeat whose result moves more than 1% from its parent's says what differs is not in the record (a rerun's
# noise moves less: a seed-only rerun of a kohya run moved 0.3%)
UNRECORDED_GAP = 0.01
REPEAT_TOLERANCE = 0.05  # a repeat whose result moves more than 5% from its twin is an anomaly
FAR_WORSE = 0.25  # a result 25% worse than the parent's is flagged


def gain(parent: float, child: float, direction: str) -> float:
    """Improvement from parent to child in the headline metric's own sense (> 0 is better)."""
    return Direction.of(direction).gain(parent, child)


def finished_ok(e: Entry) -> bool:
    return e.outcome == Outcome.OK and e.status == "FINISHED" and e.result is not None and math.isfinite(e.result)


def best_entry(entries: list[Entry], direction: str, eval_key: Optional[str] = None) -> Optional[Entry]:
    """The best run scored on `eval_key`'s eval set (results on other sets do not compare)."""
    ok = sorted((e for e in entries if finished_ok(e) and e.eval_key == eval_key), key=lambda e: e.start_ms)
    return Direction.of(direction).best(ok, lambda e: e.result)  # ties: the earliest run that reached it


def main_eval_key(entries: list[Entry]) -> Optional[str]:
    """The eval set most scored runs were measured on: the "Best" line's."""
    return t.main_eval_key([e.eval_key for e in entries if finished_ok(e)])


def anomalies(entries: list[Entry], direction: str, tolerance: float = REPEAT_TOLERANCE) -> list[Anomaly]:
    """Every run that should not be read as a plain result; a run may be flagged twice (a repeat far
    off its twin whose log also says the loss went NaN), each flag short enough for its heading."""
    found = []
    for e in entries:
        outcome, result = _outcome_anomaly(e), _result_anomaly(e, direction, tolerance)
        if outcome is not None and result is not None and result.kind == "repeat-mismatch":
            found += [result, outcome]  # the repeat first: "repeat 335% worse than X, log says loss is nan"
        else:
            found += [a for a in (outcome, result) if a is not None][:1]
    return found


def _outcome_anomaly(e: Entry) -> Optional[Anomaly]:
    if e.outcome == Outcome.DIVERGED or (e.result is not None and not math.isfinite(e.result)):
        said = e.reason or "NaN/inf result"
        short = said if said.startswith("log says") else f"diverged, {said}"
        return Anomaly(e.run_id, e.name, Outcome.DIVERGED, f"{e.name} diverged: {said}", short)
    if e.outcome in (Outcome.FAILED, Outcome.OOM, Outcome.INCOMPLETE):
        said = e.reason or e.status
        return Anomaly(e.run_id, e.name, e.outcome, f"{e.name} {e.outcome}: {said}", f"{e.outcome}, {said}")
    return None


def _result_anomaly(e: Entry, direction: str, tolerance: float) -> Optional[Anomaly]:
    if e.result is None or e.parent_result is None or not (math.isfinite(e.result) and math.isfinite(e.parent_result)):
        return None
    rel = abs(e.result - e.parent_result) / max(abs(e.parent_result), 1e-12)
    worse = gain(e.parent_result, e.result, direction) < 0
    if e.repeat and rel > tolerance:
        return Anomaly(
            e.run_id,
            e.name,
            "repeat-mismatch",
            f"{e.name} repeats {e.parent_name} with no config change, but its result "
            f"{e.result:.4g} differs from {e.parent_result:.4g} by {rel:.0%}",
            f"repeat {rel:.0%} {'worse' if worse else 'better'} than {e.parent_name}",
        )
    if not e.repeat and worse and rel > FAR_WORSE:
        return Anomaly(
            e.run_id,
            e.name,
            "far-worse",
            f"{e.name} is {rel:.0%} worse than its parent {e.parent_name} ({e.result:.4g} vs {e.parent_result:.4g})",
            f"{rel:.0%} worse than {e.parent_name}",
        )
    return None


def effects(entries: list[Entry], direction: str) -> tuple[list[Effect], list[Effect]]:
    """Each change set's gain against the parent, averaged over every run that made it; ranked.

    Only runs that ended ok against a sane parent scored on the same eval set count: an effect
    measured against a fluke, a crash or another eval set would be a false lesson."""
    acc: dict[str, list] = {}
    for e in entries:
        if e.result is None or e.parent_result is None or e.outcome != Outcome.OK or e.lineage == "sweep":
            continue
        if e.parent_anomalous or not e.comparable or e.changes.empty:
            continue
        if not (math.isfinite(e.result) and math.isfinite(e.parent_result)):
            continue
        acc.setdefault(e.changes.label(), []).append((gain(e.parent_result, e.result, direction), e.name))
    rows = [
        Effect(
            change,
            len(v),
            sum(g for g, _ in v) / len(v),
            [n for _, n in v],
            max(g for g, _ in v) - min(g for g, _ in v) if len(v) > 1 else None,
        )
        for change, v in acc.items()
    ]
    worked = sorted((r for r in rows if r.mean_gain > 0), key=lambda r: (-r.mean_gain, r.change))
    didnt = sorted((r for r in rows if r.mean_gain <= 0), key=lambda r: (r.mean_gain, r.change))
    return worked, didnt


def timeline(entries: list[Entry], best: Optional[Entry]) -> list[str]:
    """Run ids from the root ancestor (the baseline) down to the best run."""
    if best is None:
        return []
    by_id = {e.run_id: e for e in entries}
    chain, node, seen = [], best, set()
    while node is not None and node.run_id not in seen:
        seen.add(node.run_id)
        chain.append(node.run_id)
        node = by_id.get(node.parent_id) if node.parent_id else None
    return [rid for rid in reversed(chain) if by_id[rid].kind not in (t.KIND_SWEEP, t.KIND_PIPELINE, t.KIND_GROUP)]


def cost_until(entries: list[Entry], best: Entry) -> Optional[float]:
    """Device-hours of every run started up to `best`'s start: what reaching it cost, dead ends included (a
    sweep's trials before its best trial too, which a parent chain from the baseline would leave out)."""
    costs = [
        e.cost_h
        for e in entries
        if e.start_ms <= best.start_ms
        and e.cost_h is not None
        and e.kind not in (t.KIND_SWEEP, t.KIND_PIPELINE, t.KIND_GROUP)  # their time is their children's
    ]
    return sum(costs) if costs else None


def phases(entries: list[Entry], direction: str, changes_between) -> list[Phase]:
    """Per group: its best run (on the history's main eval set where the group has results on it, else
    on the group's own), what it changed overall (first run
    against best run) and what it cost."""
    out = []
    overall = main_eval_key(entries)
    grouped: dict[str, list[Entry]] = {e.group: [] for e in entries}  # one pass: groups in order of first entry
    for e in entries:
        if e.kind not in (t.KIND_SWEEP, t.KIND_PIPELINE, t.KIND_GROUP):
            grouped[e.group].append(e)
    for group, members in grouped.items():
        if not members:
            continue
        first = members[0]
        key = overall if any(finished_ok(e) and e.eval_key == overall for e in members) else main_eval_key(members)
        best = best_entry(members, direction, key)
        moved = None
        if best is not None and finished_ok(first) and first.eval_key == best.eval_key:
            moved = gain(first.result, best.result, direction)
        out.append(
            Phase(
                name=group,
                run_ids=[e.run_id for e in members],
                best_id=best.run_id if best else None,
                first_id=first.run_id,
                changes=changes_between(first.run_id, best.run_id) if best and best is not first else "",
                gain=moved,
                cost_h=sum(e.cost_h or 0.0 for e in members),
            )
        )
    return out
