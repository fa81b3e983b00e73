"""Which metric the changelog judges by, and why; and what the other results say.

A history often holds several results (`eval/loss` beside `eval/overall_f1`), and they can disagree:
the run best by loss may be the worst by F1. The changelog names its headline and where it came from
(`--metric`, or the metric the runs were recorded with), lists the other results with each one's best
run, and says where that best differs from the headline's.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from .. import tracking as t
from ..tracking import RunRecord
from ..vocabulary import Direction
from .model import Entry

# results: a split's numbers (eval/, test/, predict/, val_...), not its bookkeeping (runtime, throughput)
_RESULT = re.compile(r"^(?:eval|test|predict|val|valid|validation)[/_]")
_NOT_RESULT = re.compile(
    r"(?i)(?:runtime|per_second|_samples$|/samples$|num_tokens|best_metric|/epoch$|_epoch$|_number$|/number$|_count$)"
)


@dataclass(frozen=True)
class OtherMetric:
    name: str
    direction: Direction
    best_run_id: str
    value: float


def why_this_metric(runs: list[RunRecord], metric: str, given: bool) -> str:
    """One line saying where the headline came from."""
    if given:
        return "chosen with --metric"
    named = Counter(r.tags.get(t.TAG_METRIC) for r in runs if r.kind not in _CONTAINERS)
    read_as = Counter(
        r.tags[t.TAG_READ_AS] for r in runs if r.tags.get(t.TAG_METRIC) == metric and t.TAG_READ_AS in r.tags
    )
    if read_as:  # runs another tool logged: what they logged, and why this name
        return f"no run names one; {read_as.most_common(1)[0][0]}"
    if named.get(metric):
        scored = sum(1 for r in runs if r.kind not in _CONTAINERS)
        return f"the metric the runs were recorded with (`tunelog.metric` on {named[metric]} of {scored} runs)"
    return "no run names one: eval/loss, the default"


_CONTAINERS = {t.KIND_SWEEP, t.KIND_PIPELINE, t.KIND_PROBE, t.KIND_CHANGELOG, t.KIND_GROUP}


def _detail(name: str) -> int:
    """0 for an overall result (`eval/overall_f1`, `eval/f1`), 1 for a per-class or per-entity one."""
    leaf = name.rsplit("/", 1)[-1]
    return 0 if "overall" in leaf or leaf.count("_") == 0 else 1


def other_results(entries: list[Entry], metric: str, scored: list[Entry]) -> list[OtherMetric]:
    """Every other result two or more scored runs hold, with its best run (its way from its name)."""
    counts = Counter(k for e in scored for k in e.metrics if _RESULT.match(k) and not _NOT_RESULT.search(k))
    out, oldest_first = [], sorted(scored, key=lambda e: e.start_ms)
    # the results most runs hold first, an overall one before a per-class one (`overall_f1`, `T017_f1`)
    shared = sorted((k for k, n in counts.items() if n >= 2 and k != metric), key=lambda k: (-counts[k], _detail(k), k))
    for name in shared:
        direction = Direction.guess(name)
        best = direction.best(oldest_first, lambda e, key=name: e.metrics.get(key))
        if best is not None:
            out.append(OtherMetric(name, direction, best.run_id, best.metrics[name]))
    return out
