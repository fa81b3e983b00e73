"""Judging the history: the best run, anomalies, what worked, the timeline, the overview.

Works on the Entries `build` made; knows nothing of MLflow or Markdown.
"""

from __future__ import annotations

import math
from typing import Optional

from .. import tracking as t
from .model import Anomaly, Effect, Entry

REPEAT_TOLERANCE = 0.05  # a repeat whose result moves more than 5% from its twin is an anomaly
FAR_WORSE = 0.25  # a result 25% worse than the parent's is flagged


def gain(parent: float, child: float, direction: str) -> float:
    """Improvement from parent to child in the headline metric's own sense (> 0 is better)."""
    return child - parent if direction == t.MAXIMIZE else parent - child


def best_entry(entries: list[Entry], direction: str) -> Optional[Entry]:
    ok = [
        e
        for e in entries
        if e.outcome == "ok" and e.status == "FINISHED" and e.result is not None and math.isfinite(e.result)
    ]
    if not ok:
        return None
    if direction == t.MAXIMIZE:
        return max(ok, key=lambda e: (e.result, -e.start_ms))
    return min(ok, key=lambda e: (e.result, e.start_ms))  # ties: the earliest run that reached it


def anomalies(entries: list[Entry], direction: str, tolerance: float = REPEAT_TOLERANCE) -> list[Anomaly]:
    found = []
    for e in entries:
        if e.outcome == "diverged" or (e.result is not None and not math.isfinite(e.result)):
            found.append(Anomaly(e.run_id, e.name, "diverged", f"{e.name} diverged: {e.reason or 'NaN/inf result'}"))
            continue
        if e.outcome in ("failed", "oom"):
            found.append(Anomaly(e.run_id, e.name, e.outcome, f"{e.name} {e.outcome}: {e.reason or e.status}"))
            continue
        if e.result is None or e.parent_result is None or not math.isfinite(e.parent_result):
            continue
        rel = abs(e.result - e.parent_result) / max(abs(e.parent_result), 1e-12)
        if e.repeat and rel > tolerance:
            found.append(
                Anomaly(
                    e.run_id,
                    e.name,
                    "repeat-mismatch",
                    f"{e.name} repeats {e.parent_name} with no config change, but its result "
                    f"{e.result:.4g} differs from {e.parent_result:.4g} by {rel:.0%}",
                )
            )
        elif not e.repeat and gain(e.parent_result, e.result, direction) < 0 and rel > FAR_WORSE:
            found.append(
                Anomaly(
                    e.run_id,
                    e.name,
                    "far-worse",
                    f"{e.name} is {rel:.0%} worse than its parent {e.parent_name} "
                    f"({e.result:.4g} vs {e.parent_result:.4g})",
                )
            )
    return found


def effects(entries: list[Entry], direction: str) -> tuple[list[Effect], list[Effect]]:
    """Each change's gain against the parent, averaged over every run that made it; ranked."""
    acc: dict[str, list] = {}
    for e in entries:
        if e.result is None or e.parent_result is None or e.outcome != "ok" or e.lineage == "sweep":
            continue
        if not (math.isfinite(e.result) and math.isfinite(e.parent_result)):
            continue
        g = gain(e.parent_result, e.result, direction)
        for label in e.changes.labels():
            acc.setdefault(label, []).append((g, e.name))
    rows = [Effect(change, len(v), sum(g for g, _ in v) / len(v), [n for _, n in v]) for change, v in acc.items()]
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
    return [rid for rid in reversed(chain) if by_id[rid].kind not in (t.KIND_SWEEP, t.KIND_PIPELINE)]
