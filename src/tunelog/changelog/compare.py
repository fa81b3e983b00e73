"""`tunelog diff RUN_A RUN_B`: what differs between two runs, which the MLflow UI does not say
(mlflow#10477): params added / changed / removed, the headline and final metrics side by side
with deltas, duration, outcome, and the lineage between them when one descends from the other."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .. import tracking as t
from ..errors import TunelogError
from ..tracking import RunRecord
from ..vocabulary import spelled_as
from . import build
from .lineage import diff as lineage_diff


@dataclass
class RunDiff:
    a: RunRecord
    b: RunRecord
    added: dict[str, str] = field(default_factory=dict)  # in B only
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)  # in A only
    same: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, Optional[float], Optional[float]]] = field(default_factory=list)  # headline first
    lineage: list[str] = field(default_factory=list)  # run names from the ancestor down to the descendant


def resolve(tracker: t.Tracker, ref: str, experiment: Optional[str]) -> RunRecord:
    """A run by id, or by name within `experiment` (the latest of that name)."""
    if experiment:
        named = [r for r in tracker.all_runs(experiment) if ref in (r.run_id, r.name, r.tags.get(t.TAG_NAME))]
        if named:
            return max(named, key=lambda r: r.start_ms)
    try:
        run = tracker.get_run(ref)
    except Exception:  # noqa: BLE001 (MLflow raises its own error types for a malformed or unknown id)
        where = f"in experiment {experiment!r}" if experiment else "(pass --experiment to find runs by name)"
        raise TunelogError(f"no run {ref!r} {where}; accepted: a run id or a run name") from None
    if t.is_native(run) and run.experiment_name:  # another tool's run: read as its experiment reads it
        return next((r for r in tracker.all_runs(run.experiment_name) if r.run_id == run.run_id), run)
    return run


def compare(tracker: t.Tracker, a: RunRecord, b: RunRecord) -> RunDiff:
    changes = lineage_diff(a, b, set(), verbose=True)  # the changelog's own diff: the same normalising
    diff = RunDiff(a, b, changes.added, changes.changed, changes.removed, changes.kept)
    headline = spelled_as(b.metric or a.metric, set(a.metrics) | set(b.metrics))
    keys = [headline] + sorted((set(a.metrics) | set(b.metrics)) - {headline})
    diff.metrics = [(k, a.metrics.get(k), b.metrics.get(k)) for k in keys]
    if a.experiment_name == b.experiment_name and a.experiment_name:
        # another tool's runs record no lineage tunelog could trust beyond a parent run: none is guessed
        recorded_only = t.TAG_READ_AS in a.tags or t.TAG_READ_AS in b.tags
        diff.lineage = _lineage(tracker.all_runs(a.experiment_name), a, b, recorded_only)
    return diff


def _lineage(runs: list[RunRecord], a: RunRecord, b: RunRecord, recorded_only: bool) -> list[str]:
    """The changelog's parent chain from one run to the other, if one descends from the other; `recorded_only`
    (runs another tool logged): by what the runs record (a parent run), never a parent guessed from configs and
    start order."""
    log = build(runs, a.experiment_name)
    entries = {e.run_id: e for e in log.entries}
    for top, bottom in ((a, b), (b, a)):
        chain, node, seen = [], entries.get(bottom.run_id), set()
        while node is not None and node.run_id not in seen:
            seen.add(node.run_id)
            chain.append(node.name)
            if node.run_id == top.run_id:
                return list(reversed(chain))
            recorded = node.parent_id and not (recorded_only and node.lineage == "closest")
            node = entries.get(node.parent_id) if recorded else None
    return []


def _num(x: Optional[float]) -> str:
    return "-" if x is None else (f"{x:.4g}" if math.isfinite(x) else str(x))


def _delta(x: Optional[float], y: Optional[float]) -> str:
    if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
        return ""
    return f"{y - x:+.4g}" + (f" ({(y - x) / abs(x):+.1%})" if x else "")


def _facts(run: RunRecord) -> tuple[str, str, str]:
    seconds = (run.end_ms - run.start_ms) / 1000 if run.end_ms and run.start_ms else None
    outcome = run.tags.get(t.TAG_OUTCOME) or run.status.lower()
    return run.tags.get(t.TAG_NAME) or run.name, outcome, f"{seconds:.0f} s" if seconds is not None else "-"


def to_text(diff: RunDiff, markdown: bool = False, only_changed: bool = False, show_all: bool = False) -> str:
    """A plain table for the terminal, or Markdown (`--md`) for a PR or a notebook. By default the params
    equal in both runs are one line (a spec's 65 fields, `model.gguf_file None` among them, would bury the
    few that differ) and `system/*` figures are left out; `show_all` lists them."""
    (name_a, out_a, dur_a), (name_b, out_b, dur_b) = _facts(diff.a), _facts(diff.b)
    rows: list[tuple[str, ...]] = [("", name_a, name_b, "")]
    rows += [("run id", diff.a.run_id, diff.b.run_id, ""), ("outcome", out_a, out_b, "")]
    rows.append(("duration", dur_a, dur_b, ""))
    param_rows = [(f"+ {k}", "-", v, "added") for k, v in diff.added.items()]
    param_rows += [(f"~ {k}", x, y, "changed") for k, (x, y) in diff.changed.items()]
    param_rows += [(f"- {k}", v, "-", "removed") for k, v in diff.removed.items()]
    if show_all:
        param_rows += [(f"  {k}", v, v, "") for k, v in diff.same.items()]
    elif diff.same and not only_changed:
        param_rows.append((f"  ({len(diff.same)} params the same in both: --all lists them)", "", "", ""))
    metric_rows = [(k, _num(x), _num(y), _delta(x, y)) for k, x, y in diff.metrics]
    if not show_all:
        metric_rows = [r for r in metric_rows if not r[0].startswith("system/")]
    if only_changed:
        metric_rows = [r for r in metric_rows if r[1] != r[2]]
    sections = [("Params", param_rows), ("Metrics (final)", metric_rows)]
    lineage = " -> ".join(diff.lineage) if diff.lineage else "neither run descends from the other"
    if markdown:
        return _markdown(rows, sections, lineage)
    return _plain(rows, sections, lineage)


def _markdown(rows, sections, lineage: str) -> str:
    out = [f"| | {rows[0][1]} | {rows[0][2]} | |", "| --- | --- | --- | --- |"]
    out += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows[1:]]
    for title, body in sections:
        out += ["", f"**{title}**", "", "| | A | B | |", "| --- | --- | --- | --- |"]
        out += [f"| `{r[0].strip()}` | {r[1]} | {r[2]} | {r[3]} |" for r in body] or ["| (none) | | | |"]
    return "\n".join(out + ["", f"Lineage: {lineage}"]) + "\n"


def _plain(rows, sections, lineage: str) -> str:
    every = rows + [r for _, body in sections for r in body]
    widths = [min(60, max(len(str(r[i])) for r in every)) for i in range(3)]

    def line(r) -> str:
        return "  ".join(str(c)[:60].ljust(w) for c, w in zip(r[:3], widths)) + (f"  {r[3]}" if r[3] else "")

    out = [line(r) for r in rows]
    for title, body in sections:
        out += ["", title + ":"] + ([line(r) for r in body] or ["(none)"])
    return "\n".join(out + ["", f"lineage: {lineage}"]).rstrip() + "\n"
