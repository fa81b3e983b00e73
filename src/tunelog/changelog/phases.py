"""Which section of the story a run belongs to: its phase.

People rarely tag phases; they name runs in families (`gru_ctc_reg1..7`, `run16_greedy`,
`run16_2`) and work in bursts. So a run's group is, first that found: a `--phases FILE`
pattern, its `tunelog.phase` tag, its container (a sweep, pipeline or probe), else its
name family among consecutive runs, split where the history pauses for more than `GAP_H`.
"""

from __future__ import annotations

import re
from collections import Counter
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Optional

from .. import tracking as t
from ..errors import SpecError
from ..spec import read_yaml
from ..tracking import RunRecord

GAP_H = 12.0  # a pause this long (hours) between two runs starts a new phase
CONTAINERS = (t.KIND_SWEEP, t.KIND_PIPELINE, t.KIND_PROBE)
_TRAILING_NUMBER = re.compile(r"^(.*?)[_\-.]?\d+$")


def read_phases(path: str | Path) -> dict[str, list[str]]:
    """`phase name: [run-name pattern, ...]` (or one pattern), optionally under a `phases:` key."""
    raw = read_yaml(path)
    raw = raw.get("phases", raw) if isinstance(raw.get("phases"), dict) else raw
    phases: dict[str, list[str]] = {}
    for name, patterns in raw.items():
        patterns = [patterns] if isinstance(patterns, str) else patterns
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise SpecError(str(path), [(str(name), "accepted: a run-name pattern or a list of them (run16_*)")])
        phases[str(name)] = patterns
    return phases


def family(name: str) -> Optional[str]:
    """`gru_ctc_reg3` -> `gru_ctc_reg`, `run16_2` / `run16_greedy` -> `run16`; None for a name
    with no family part (`01_baseline` -> `01`, only digits, is no family)."""
    match = _TRAILING_NUMBER.match(name)
    stem = match.group(1) if match else (name.rsplit("_", 1)[0] if "_" in name else name)
    stem = stem.rstrip("_-.")
    return stem if stem and not stem.isdigit() else None


def assign(runs: list[RunRecord], named: Optional[dict[str, list[str]]] = None) -> dict[str, str]:
    """run id -> its group's title (`Phase: run16*`, `Sweep: demo-sweep`, `Runs`), runs in start order."""
    by_id = {r.run_id: r for r in runs}
    groups: dict[str, str] = {}
    loose: list[RunRecord] = []
    for run in runs:
        title = _named(run, named or {}) or _tagged(run) or _contained(run, by_id)
        if title:
            groups[run.run_id] = title
        elif run.kind not in CONTAINERS:
            loose.append(run)
        else:
            groups[run.run_id] = f"{run.kind.capitalize()}: {run.tags.get(t.TAG_NAME) or run.name}"
    groups.update(_inferred(loose))
    return groups


def _named(run: RunRecord, named: dict[str, list[str]]) -> Optional[str]:
    name = run.tags.get(t.TAG_NAME) or run.name
    return next((f"Phase: {p}" for p, pats in named.items() if any(fnmatchcase(name, x) for x in pats)), None)


def _tagged(run: RunRecord) -> Optional[str]:
    return f"Phase: {run.tags[t.TAG_PHASE]}" if run.tags.get(t.TAG_PHASE) else None


def _contained(run: RunRecord, by_id: dict[str, RunRecord]) -> Optional[str]:
    container = by_id.get(run.tags.get(t.TAG_PARENT, ""))
    if container is None or container.kind not in CONTAINERS:
        return None
    return f"{container.kind.capitalize()}: {container.tags.get(t.TAG_NAME) or container.name}"


def _inferred(runs: list[RunRecord]) -> dict[str, str]:
    """Consecutive runs of one name family form a phase; runs of no family (or of a family seen
    once) share one, split at long pauses."""
    names = [r.tags.get(t.TAG_NAME) or r.name for r in runs]
    families = [family(n) for n in names]
    seen = Counter(families)
    keys = [f if f and seen[f] > 1 else None for f in families]
    segments: list[tuple[Optional[str], list[RunRecord]]] = []
    previous_end = None
    for run, key in zip(runs, keys):
        paused = previous_end is not None and run.start_ms - previous_end > GAP_H * 3600_000
        if not segments or segments[-1][0] != key or paused:
            segments.append((key, []))
        segments[-1][1].append(run)
        previous_end = max(previous_end or 0, run.end_ms or run.start_ms)
    anonymous = sum(1 for key, _ in segments if key is None)
    out, n = {}, 0
    for key, members in segments:
        if key is None:
            n += 1
            title = "Runs" if anonymous == 1 else f"Runs, part {n}"
        else:
            title = f"Phase: {key}*"
        out.update({r.run_id: title for r in members})
    return out
