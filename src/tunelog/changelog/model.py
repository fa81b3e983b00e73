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

    def label(self) -> str:
        """The whole change set as one label, the unit "what worked" aggregates over: keys that moved
        together are one change (`scheduler linear→cosine + warmup +1000`), since their effects
        cannot be told apart; a key gets its own row only when it changed alone."""
        parts = [f"{k} {_moved(old, new)}" for k, (old, new) in sorted(self.changed.items())]
        parts += [f"{k}={short(v)} added" for k, v in sorted(self.added.items())]
        parts += [f"{k} removed" for k in sorted(self.removed)]
        return " + ".join(parts)


def _moved(old: str, new: str) -> str:
    """`+1000` between integers (a step the reader can repeat), `old→new` otherwise."""
    try:
        a, b = int(old), int(new)
    except ValueError:
        return f"{short(old)}→{short(new)}"
    return f"{b - a:+d}"


def short(value: str) -> str:
    """`19.366778109965093` -> `19.37`, `0.0006000000000000001` -> `0.0006`: for reading, not the stored digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or len(value) <= 8 else f"{number:.4g}"


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
    twin_of: Optional[str] = None  # the anomalous run this one was first paired with (its parent has the same config)
    changes: Changes = field(default_factory=Changes)
    result: Optional[float] = None
    parent_result: Optional[float] = None
    metrics: dict[str, float] = field(default_factory=dict)
    peak_mem_gb: Optional[float] = None
    note: str = ""
    config: str = ""
    best: bool = False
    results: dict[str, float] = field(default_factory=dict)  # the headline's candidates, side by side
    eval_key: Optional[str] = None  # what the headline was measured on
    comparable: bool = True  # False: the parent was scored on another eval set, no delta or effect
    parent_anomalous: bool = False  # no sane twin replaced an anomalous parent: no effect measured
    gpus: Optional[int] = None  # devices the run trained on (0: CPU); None when unknown
    anomaly: list[str] = field(default_factory=list)  # short flags for the run's own heading
    unchanged: int = 0  # config keys neither changed nor shown as kept
    container: Optional[str] = None  # the sweep/probe/pipeline run this one belongs to
    study: str = ""

    @property
    def cost_h(self) -> Optional[float]:
        """Device-hours: GPUs x wall hours, or wall hours on the CPU; None without a duration."""
        if self.duration_s is None:
            return None
        return self.duration_s / 3600 * (self.gpus if self.gpus else 1)

    @property
    def repeat(self) -> bool:
        return self.parent_id is not None and self.lineage != "sweep" and self.changes.empty


@dataclass
class Anomaly:
    run_id: str
    name: str
    kind: str  # repeat-mismatch, diverged, failed, oom, incomplete, far-worse
    message: str
    short: str = ""  # the flag in the run's own heading


@dataclass
class Effect:
    change: str  # a change set's label
    runs: int
    mean_gain: float  # improvement of the headline metric against the parent; > 0 is better
    run_names: list[str]
    spread: Optional[float] = None  # (max - min) of the gains, with 2 runs or more

    @property
    def anecdote(self) -> bool:
        """One run says nothing about significance."""
        return self.runs < 2


@dataclass
class Phase:
    name: str
    run_ids: list[str]
    best_id: Optional[str]
    first_id: str
    changes: str  # what the phase changed overall: its first run's config against its best run's
    gain: Optional[float]  # best vs first, in the headline's sense (> 0 is better)
    cost_h: float


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
    phases: list[Phase] = field(default_factory=list)
    other_best: dict[str, str] = field(default_factory=dict)  # eval key -> best run id, for other eval sets
    timeline_cost_h: Optional[float] = None  # device-hours of every run started up to the best's start
    result_keys: list[str] = field(default_factory=list)  # candidate headline metrics shown side by side
    varying_keys: list[str] = field(default_factory=list)  # config keys that differ somewhere in the history
    metric_why: str = ""  # where the headline came from (--metric, or the runs' tunelog.metric)
    other_metrics: list = field(default_factory=list)  # metrics.OtherMetric: other results and their best runs

    def entry(self, run_id: str) -> Entry:
        """An entry by run id (indexed once: a phase table over 2,500 groups asked it 5,000 times)."""
        index = self.__dict__.get("_by_id")
        if index is None or len(index) != len(self.entries):
            index = {e.run_id: e for e in self.entries}
            self.__dict__["_by_id"] = index
        return index[run_id]

    def by_name(self, name: str) -> Entry:
        return next(e for e in self.entries if e.name == name)
