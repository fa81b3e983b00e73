"""The changelog as data: what `build` produces and `render` turns into Markdown or JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Changes:
    added: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (old, new)
    removed: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def labels(self) -> list[str]:
        """One label per change, the unit "what worked" aggregates over."""
        return (
            [f"{k}: {old} -> {new}" for k, (old, new) in sorted(self.changed.items())]
            + [f"{k}: added {v}" for k, v in sorted(self.added.items())]
            + [f"{k}: removed" for k in sorted(self.removed)]
        )


@dataclass
class Entry:
    run_id: str
    name: str
    kind: str
    status: str
    outcome: str
    reason: str
    group: str
    start_ms: int
    duration_s: Optional[float]
    parent_id: Optional[str] = None
    parent_name: Optional[str] = None
    lineage: str = "none"  # based_on, sweep, closest, none
    changes: Changes = field(default_factory=Changes)
    result: Optional[float] = None
    parent_result: Optional[float] = None
    metrics: dict[str, float] = field(default_factory=dict)
    peak_mem_gb: Optional[float] = None
    note: str = ""
    config: str = ""
    best: bool = False

    @property
    def repeat(self) -> bool:
        return self.parent_id is not None and self.changes.empty


@dataclass
class Anomaly:
    run_id: str
    name: str
    kind: str  # repeat-mismatch, diverged, nan, failed, far-worse
    message: str


@dataclass
class Effect:
    change: str
    runs: int
    mean_gain: float  # improvement of the headline metric against the parent; > 0 is better
    run_names: list[str]


@dataclass
class Changelog:
    experiment: str
    metric: str
    direction: str
    entries: list[Entry]
    best_id: Optional[str]
    anomalies: list[Anomaly]
    worked: list[Effect]
    didnt: list[Effect]
    timeline: list[str]  # run ids, baseline to best
    overview: list[str]  # run ids of named configs
    best_config: dict[str, str]

    def entry(self, run_id: str) -> Entry:
        return next(e for e in self.entries if e.run_id == run_id)

    def by_name(self, name: str) -> Entry:
        return next(e for e in self.entries if e.name == name)
