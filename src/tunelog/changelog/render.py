"""Render a Changelog as Markdown or JSON; nothing here decides anything.

Deterministic: ordering comes from the data and times are the runs' own (UTC), so
the same store renders byte-identical output.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Optional

from .. import tracking as t
from .model import Changelog, Entry


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
    return "higher is better" if direction == t.MAXIMIZE else "lower is better"


def to_json(log: Changelog) -> str:
    return json.dumps(asdict(log), indent=2, sort_keys=True, default=str, allow_nan=True)


def to_markdown(log: Changelog) -> str:
    lines: list[str] = [f"# Changelog: {log.experiment}", ""]
    dated = [e for e in log.entries if e.start_ms]
    span = f", {_date(dated[0].start_ms)} to {_date(dated[-1].start_ms)}" if dated else ""
    lines.append(f"{len(log.entries)} runs{span}. Headline metric: `{log.metric}` ({_better(log.direction)}).")
    if log.best_id:
        best = log.entry(log.best_id)
        lines.append(f"Best: **{best.name}** ({log.metric} {_num(best.result)}).")
    lines.append("")
    lines += _overview(log) + _timeline(log) + _effects(log) + _anomalies(log)
    for group in dict.fromkeys(e.group for e in log.entries):
        lines += [f"## {group}", ""]
        for entry in (e for e in log.entries if e.group == group):
            lines += _entry(log, entry)
    lines += _best_config(log)
    return "\n".join(lines).rstrip() + "\n"


SUMMARY_LINES = 200  # the experiment page shows the summary; the whole story is the changelog artifact


def to_summary(log: Changelog, limit: int = SUMMARY_LINES) -> str:
    """The story's head for the experiment page in the MLflow UI: the best run, the timeline, what worked
    and what didn't, the anomalies; at most `limit` lines (the full Markdown is `tunelog changelog`'s)."""
    lines = to_markdown(log).split("\n## ", 1)[0].rstrip().split("\n") + [""]
    lines += _timeline(log) + _effects(log) + _anomalies(log)
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
    return ["## Timeline", "", " -> ".join(steps), ""]


def _effects(log: Changelog) -> list[str]:
    out: list[str] = []
    for title, rows in (("What worked", log.worked), ("What didn't", log.didnt)):
        if not rows:
            continue
        out += [f"## {title}", "", f"| change | runs | mean effect on {log.metric} vs parent |", "| --- | --- | --- |"]
        sign = 1 if log.direction == t.MAXIMIZE else -1
        out += [f"| `{r.change}` | {r.runs} | {sign * r.mean_gain:+.4g} |" for r in rows]
        out.append("")
    return out


def _anomalies(log: Changelog) -> list[str]:
    if not log.anomalies:
        return []
    return ["## Anomalies", ""] + [f"- **{a.kind}**: {a.message}" for a in log.anomalies] + [""]


def entry_markdown(log: Changelog, e: Entry) -> str:
    """One run's entry on its own (a registered model version's description)."""
    return "\n".join(_entry(log, e)).rstrip() + "\n"


def _vs_parent(e: Entry) -> str:
    """` (+0.12 vs parent)` when both results are finite numbers, else nothing."""
    if e.result is None or e.parent_result is None or not (math.isfinite(e.result) and math.isfinite(e.parent_result)):
        return ""
    delta = e.result - e.parent_result
    return f" ({'+' if delta >= 0 else ''}{_num(delta)} vs parent)"


def _entry(log: Changelog, e: Entry) -> list[str]:
    star = " (best)" if e.best else ""
    reason = f" ({e.reason})" if e.reason else ""
    memory = f"; peak memory {e.peak_mem_gb:.2f} GB" if e.peak_mem_gb is not None else ""
    out = [
        f"### {e.name}{star}",
        "",
        f"Outcome: {e.outcome}{reason}; {log.metric}: {_num(e.result)}"
        f"{_vs_parent(e)}; duration {_duration(e.duration_s)}{memory}",
        "",
    ]
    if e.parent_id is None:
        out += ["Baseline: no earlier run to compare with.", ""]
    elif e.lineage == "sweep":
        out += [f"Trial of {e.parent_name}.", ""]
    elif e.repeat:
        out += [f"No changes: a repeat of {e.parent_name}.", ""]
    else:
        out += [f"Changes from {e.parent_name}:"]
        out += [f"- Added: `{k}` = {v}" for k, v in e.changes.added.items()]
        out += [f"- Changed: `{k}`: {old} -> {new}" for k, (old, new) in e.changes.changed.items()]
        out += [f"- Removed: `{k}` (was {v})" for k, v in e.changes.removed.items()]
        out.append("")
    if e.changes.kept:
        out += ["Kept: " + ", ".join(f"`{k}`={v}" for k, v in e.changes.kept.items()), ""]
    others = {k: v for k, v in e.metrics.items() if k != log.metric and not k.startswith("sweep/")}
    if others:
        out += ["Final metrics: " + ", ".join(f"{k} {_num(v)}" for k, v in list(others.items())[:12]), ""]
    if e.note:
        out += ["> " + e.note.strip().replace("\n", "\n> "), ""]
    return out


def _best_config(log: Changelog) -> list[str]:
    if not log.best_config:
        return []
    best = log.entry(log.best_id) if log.best_id else None
    out = [
        "## Final best configuration",
        "",
        f"From **{best.name}**." if best else "",
        "",
        "| param | value |",
        "| --- | --- |",
    ]
    return out + [f"| `{k}` | {v} |" for k, v in log.best_config.items()] + [""]
