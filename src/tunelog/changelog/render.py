"""Render a Changelog as Markdown or JSON; nothing here decides anything.

Deterministic: ordering comes from the data and times are the runs' own (UTC), so
the same store renders byte-identical output.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Optional

from .. import tracking as t
from ..vocabulary import Direction, Outcome
from .model import Changelog, Entry, short
from .verdicts import UNRECORDED_GAP


def _num(x: Optional[float]) -> str:
    if x is None:
        return "n/a"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "n/a"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _better(direction: str) -> str:
    return Direction.of(direction).describe()


def to_json(log: Changelog) -> str:
    return json.dumps(asdict(log), indent=2, sort_keys=True, default=str, allow_nan=True)


def _cost(hours: Optional[float], gpus: Optional[int] = None) -> str:
    """Device-hours (GPUs x hours; the CPU's hours where a run trained there, or wall hours unknown)."""
    if hours is None:
        return "n/a"
    unit = {None: "device", 0: "CPU"}.get(gpus, "GPU")
    return f"{hours:.3g} {unit}-h" if hours >= 0.01 else f"{hours * 3600:.0f} {unit}-s"


def to_markdown(log: Changelog) -> str:
    lines: list[str] = [f"# Changelog: {log.experiment}", ""] + _head(log)
    lines += _overview(log) + _timeline(log) + _phases(log) + _effects(log) + _anomalies(log)
    grouped: dict[str, list[Entry]] = {}
    for e in log.entries:  # one pass: a group per section, in order of its first entry
        grouped.setdefault(e.group, []).append(e)
    for group, members in grouped.items():
        lines += [f"## {group}", ""]
        if group.startswith("Sweep: "):
            lines += _sweep(log, members)
        elif group.startswith("Probe: "):
            lines += _probe(log, members)
        else:
            for entry in members:
                lines += _entry(log, entry)
    lines += _best_config(log)
    return "\n".join(lines).rstrip() + "\n"


def _head(log: Changelog) -> list[str]:
    dated = [e for e in log.entries if e.start_ms]
    span = f", {_date(dated[0].start_ms)} to {_date(dated[-1].start_ms)}" if dated else ""
    spent = sum(e.cost_h or 0.0 for e in log.entries if e.kind not in (t.KIND_SWEEP, t.KIND_PIPELINE, t.KIND_GROUP))
    out = [
        f"{len(log.entries)} runs{span}, {_cost(spent)} in all. "
        f"Headline metric: `{log.metric}` ({_better(log.direction)})."
    ]
    if log.metric_why:
        out[-1] += f" Why this one: {log.metric_why}."
    if log.best_id:
        best = log.entry(log.best_id)
        out.append(f"Best: **{best.name}** ({log.metric} {_num(best.result)}).")
    out += _other_metrics(log)
    for key, run_id in log.other_best.items():
        other = log.entry(run_id)
        out.append(f"Best on another eval set ({key}, not comparable): {other.name} ({_num(other.result)}).")
    return out + [""]


def _other_metrics(log: Changelog) -> list[str]:
    """The other results, each with its best run; where that is not the headline's best, said so."""
    if not log.other_metrics:
        return []
    out = ["", "Other results (pass `--metric NAME` to judge by one):", ""]
    for other in log.other_metrics[:12]:
        run = log.entry(other.best_run_id)
        differs = ""
        if log.best_id and other.best_run_id != log.best_id:
            mine = log.entry(log.best_id).metrics.get(other.name)
            differs = f"; **not** the headline's best ({_num(mine)} there)" if mine is not None else ""
        out.append(f"- `{other.name}` ({_better(other.direction)}): best {run.name} ({_num(other.value)}){differs}")
    return out


SUMMARY_LINES = 200  # the experiment page shows the summary; the whole story is the changelog artifact


def to_summary(log: Changelog, limit: int = SUMMARY_LINES) -> str:
    """The story's head for the experiment page in the MLflow UI: the best run, the timeline, the phases,
    what worked and what didn't, the anomalies; at most `limit` lines (the full Markdown is `tunelog
    changelog`'s)."""
    lines = [f"# Changelog: {log.experiment}", ""] + _head(log)
    lines += _timeline(log) + _phases(log) + _effects(log) + _anomalies(log)
    if len(lines) > limit:
        lines = lines[: limit - 1] + ["... (the whole story: `tunelog changelog --experiment NAME`)"]
    return "\n".join(lines).rstrip() + "\n"


def _overview(log: Changelog) -> list[str]:
    if not log.overview:
        return []
    out = [
        "## Configuration overview",
        "",
        f"| config | run | outcome | {log.metric} | training time | peak memory |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for rid in log.overview:
        e = log.entry(rid)
        mem = f"{e.peak_mem_gb:.2f} GB" if e.peak_mem_gb is not None else "n/a"
        out.append(f"| {e.config} | {e.name} | {e.outcome} | {_num(e.result)} | {_duration(e.duration_s)} | {mem} |")
    return out + [""]


def _timeline(log: Changelog) -> list[str]:
    if not log.timeline:
        return []
    steps = [f"{log.entry(r).name} ({_num(log.entry(r).result)})" for r in log.timeline]
    cost = f"Getting to the best cost {_cost(log.timeline_cost_h)}: every run started before it, dead ends included."
    return ["## Timeline", "", " -> ".join(steps), "", cost, ""]


def _phases(log: Changelog) -> list[str]:
    rows = [p for p in log.phases if len(p.run_ids) > 1 and not p.name.startswith("Probe: ")]  # no headline
    if len(log.phases) < 2 or not rows:
        return []
    out = [
        "## Phases",
        "",
        f"| phase | runs | best | changed (first -> best) | effect on {log.metric} | cost |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    sign = Direction.of(log.direction).sign
    for p in rows:
        best = log.entry(p.best_id) if p.best_id else None
        best_cell = f"{best.name} ({_num(best.result)})" if best else "none ok"
        effect = f"{sign * p.gain + 0.0:+.4g}" if p.gain is not None else "n/a"
        changed = f"`{_label(p.changes)}`" if p.changes else "-"
        out.append(f"| {p.name} | {len(p.run_ids)} | {best_cell} | {changed} | {effect} | {_cost(p.cost_h)} |")
    return out + [""]


def _effects(log: Changelog) -> list[str]:
    out: list[str] = []
    sign = Direction.of(log.direction).sign
    for title, rows in (("What worked", log.worked), ("What didn't", log.didnt)):
        if not rows:
            continue
        out += [
            f"## {title}",
            "",
            f"| change | runs | mean effect on {log.metric} vs parent | spread |",
            "| --- | --- | --- | --- |",
        ]
        for r in rows:
            spread = "1 run: an anecdote" if r.anecdote else f"{r.spread:.3g} ({', '.join(r.run_names[:4])})"
            out.append(f"| `{_label(r.change)}` | {r.runs} | {sign * r.mean_gain + 0.0:+.4g} | {spread} |")
        out.append("")
    if out:
        out += ["Effects against the run's parent; a change seen in one run is no evidence of a trend.", ""]
    return out


def _anomalies(log: Changelog) -> list[str]:
    if not log.anomalies:
        return []
    return ["## Anomalies", ""] + [f"- **{a.kind}**: {a.message}" for a in log.anomalies] + [""]


def entry_markdown(log: Changelog, e: Entry) -> str:
    """One run's entry on its own (a registered model version's description)."""
    return "\n".join(_entry(log, e)).rstrip() + "\n"


def _vs_parent(e: Entry) -> str:
    """` (+0.12 vs parent)` when both results are finite numbers and compare, else why not."""
    if e.parent_id is not None and not e.comparable and e.result is not None:
        return " (not comparable with its parent: eval set changed)"
    if e.result is None or e.parent_result is None or not (math.isfinite(e.result) and math.isfinite(e.parent_result)):
        return ""
    delta = e.result - e.parent_result
    return f" ({'+' if delta >= 0 else ''}{_num(delta)} vs parent)"


def _results(log: Changelog, e: Entry) -> str:
    """The headline with its delta, then the other candidate results: `per_greedy: 0.2 (-0.01 vs parent);
    per_beam 0.19`."""
    shown = [f"; {k} {_num(e.results[k])}" for k in log.result_keys[1:] if k in e.results]
    return f"{log.metric}: {_num(e.result)}{_vs_parent(e)}" + "".join(shown)


def _heading(e: Entry) -> str:
    star = " (best)" if e.best else ""
    flag = f" — anomaly: {', '.join(e.anomaly)}" if e.anomaly else ""
    return f"### {e.name}{star}{flag}"


def _entry(log: Changelog, e: Entry) -> list[str]:
    reason = f" ({e.reason})" if e.reason else ""
    memory = f"; peak memory {e.peak_mem_gb:.2f} GB" if e.peak_mem_gb is not None else ""
    cost = f" ({_cost(e.cost_h, e.gpus)})" if e.cost_h is not None and e.gpus is not None else ""
    if e.kind == t.KIND_GROUP:  # another tool's parent run: it holds its nested runs, it trained nothing
        return [_heading(e), "", "A group of the runs nested in it below; it trained nothing itself.", ""]
    out = [
        _heading(e),
        "",
        f"Outcome: {e.outcome}{reason}; {_results(log, e)}; duration {_duration(e.duration_s)}{cost}{memory}",
        "",
    ]
    twin = f" ({e.twin_of}, the same config, was anomalous)" if e.twin_of else ""
    if e.parent_id is None and e.kind in (t.KIND_PIPELINE, t.KIND_SWEEP, t.KIND_PROBE, t.KIND_GROUP):
        pass  # a container: its children carry the configs
    elif e.parent_id is None:
        out += ["Baseline: no earlier run to compare with.", ""]
    elif e.lineage == "sweep":
        out += [f"Trial of {e.parent_name}.", ""]
    elif e.repeat and _differs(e.result, e.parent_result):
        out += [
            f"No logged param differs from {e.parent_name}{twin}, but its result does "
            f"({e.result:.6g} vs {e.parent_result:.6g}): what differs is not in the record.",
            "",
        ]
    elif e.repeat:
        out += [f"No changes: a repeat of {e.parent_name}{twin}.", ""]
    else:
        warn = " (that run was anomalous: no effect is measured against it)" if e.parent_anomalous else ""
        out += [f"Changes vs {e.parent_name}{twin}{warn}:"]
        out += [f"- Added: `{k}` = {v}" for k, v in e.changes.added.items()]
        out += [f"- Changed: `{k}`: {old} -> {new}" for k, (old, new) in e.changes.changed.items()]
        out += [f"- Removed: `{k}` (was {v})" for k, v in e.changes.removed.items()]
        out.append("")
    kept = [f"`{k}`={short(v)}" for k, v in e.changes.kept.items()]
    if kept or e.unchanged:
        others = f"{e.unchanged} other key{'s' if e.unchanged > 1 else ''} unchanged" if e.unchanged else ""
        out += ["Kept: " + ", ".join(kept + ([others] if others else [])), ""]
    others = {
        k: v
        for k, v in e.metrics.items()
        if k not in log.result_keys and k != t.SCORE_METRIC and not k.startswith(("sweep/", "system/"))
    }  # MLflow's system metrics are the machine's, not the run's results
    if others:
        out += ["Final metrics: " + ", ".join(f"{k} {_num(v)}" for k, v in list(others.items())[:8]), ""]
    if e.note:
        out += ["> " + e.note.strip().replace("\n", "\n> "), ""]
    return out


LEADERBOARD = 10


def _sweep(log: Changelog, members: list[Entry]) -> list[str]:
    """A sweep in one section: its counts and cost, a leaderboard, rejected trials one line each, and
    details only for its best trial and its anomalies."""
    trials = [e for e in members if e.kind == t.KIND_TRIAL]
    counts = Counter(e.outcome for e in trials)
    spent = sum(e.cost_h or 0.0 for e in trials)
    out = [
        f"{len(trials)} trials: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) + f"; {_cost(spent)}.",
        "",
    ]
    scored = [e for e in trials if e.result is not None and math.isfinite(e.result) and e.outcome == Outcome.OK]
    scored.sort(key=lambda e: Direction.of(log.direction).sort_key(e.result))
    varying = sorted(_varying(trials))[:6]
    if scored:
        out += [
            f"| trial | {log.metric} | " + " | ".join(f"`{k}`" for k in varying) + " | duration |",
            "| --- | --- | " + "--- | " * len(varying) + "--- |",
        ]
        for e in scored[:LEADERBOARD]:
            cells = " | ".join(short(e.changes.kept.get(k, "")) for k in varying)
            out.append(f"| {e.name} | {_num(e.result)} | {cells} | {_duration(e.duration_s)} |")
        out += [f"({len(scored) - LEADERBOARD} more scored trials)" if len(scored) > LEADERBOARD else "", ""]
    for word in (Outcome.PRUNED, Outcome.REJECTED):  # the trials the leaderboard has no result for
        listed = [e for e in trials if e.outcome == word]
        out += [f"- {e.name}: {word}, {e.reason}" for e in listed[:LEADERBOARD]]
        if len(listed) > LEADERBOARD:
            out.append(f"- ... and {len(listed) - LEADERBOARD} more {word}")
        if listed:
            out.append("")
    for e in trials:
        if e.best or e.anomaly:
            out += _entry(log, e)
    return out


def _label(change: str, parts: int = 4) -> str:
    """A change set for a table cell: its first `parts` changes and how many more (JSON keeps them all)."""
    items = change.split(" + ")
    return change if len(items) <= parts else " + ".join(items[:parts]) + f" + {len(items) - parts} more"


def _varying(trials: list[Entry]) -> set[str]:
    values: dict[str, set[str]] = {}
    for e in trials:
        for k, v in e.changes.kept.items():
            values.setdefault(k, set()).add(v)
    return {k for k, v in values.items() if len(v) > 1}


def _probe(log: Changelog, members: list[Entry]) -> list[str]:
    """A probe's candidates fold into one table under the probe's own entry."""
    parents = [e for e in members if e.container is None or e.container not in {m.run_id for m in members}]
    candidates = [e for e in members if e not in parents]
    out: list[str] = []
    for e in parents:
        out += [_heading(e), "", f"Outcome: {e.outcome}; duration {_duration(e.duration_s)}", ""]
    candidates.sort(key=lambda c: -(c.metrics.get("perf/samples_per_s") or 0.0))  # the fastest first
    if candidates:
        out += ["| candidate | outcome | samples/s | peak memory |", "| --- | --- | --- | --- |"]
        for c in candidates[:LEADERBOARD]:
            speed, mem = c.metrics.get("perf/samples_per_s"), c.peak_mem_gb
            out.append(
                f"| {c.name} | {c.outcome}{f' ({c.reason})' if c.reason else ''} | {_num(speed)} | "
                f"{f'{mem:.2f} GB' if mem is not None else 'n/a'} |"
            )
        if len(candidates) > LEADERBOARD:
            out.append(f"({len(candidates) - LEADERBOARD} slower candidates: the probe run's probe_summary.json)")
        out.append("")
    return out


def _best_config(log: Changelog) -> list[str]:
    """The best run's config: the keys that differ somewhere in the history (the rest never moved and is
    in the run's params and spec.yaml; `--format json` has them all)."""
    if not log.best_config:
        return []
    best = log.entry(log.best_id) if log.best_id else None
    shown = {k: v for k, v in log.best_config.items() if k in set(log.varying_keys)}
    rest = len(log.best_config) - len(shown)
    out = ["## Final best configuration", "", f"From **{best.name}**." if best else "", ""]
    out += ["| param | value |", "| --- | --- |"] + [f"| `{k}` | {short(v)} |" for k, v in shown.items()]
    return out + ([f"| ({rest} other params) | the same in every run: see the run's params |"] if rest else []) + [""]


def _differs(a: Optional[float], b: Optional[float]) -> bool:
    """Two results further apart than a rerun's noise (`verdicts.UNRECORDED_GAP`)."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) > UNRECORDED_GAP * max(abs(a), abs(b))
