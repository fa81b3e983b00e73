"""Who derives from whom, and what changed: the `diff` layer of the changelog.

A run's parent is its `tunelog.based_on` tag; a sweep trial's is its sweep; otherwise the
earlier run of the same project (`tunelog.project`; runs without it are one project) whose config is closest (fewest differing keys; among equally
close ones a run that ended ok, then the most recent), looked for among the `WINDOW` most
recent earlier runs so that a history of 10,000 runs stays linear. A parent that turns out
anomalous is swapped for its sane twin (`sane_twins`): no lesson is measured against a fluke.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from functools import lru_cache
from itertools import chain
from typing import Optional

import numpy as np

from .. import tracking as t
from ..tracking import TAG_BASED_ON, TAG_PARENT, RunRecord
from ..vocabulary import Outcome
from .model import Changes

WINDOW = 200
CONTAINER_KINDS = {
    t.KIND_SWEEP,
    t.KIND_PIPELINE,
    t.KIND_PROBE,
    t.KIND_CHANGELOG,
    t.KIND_GROUP,
}  # runs that hold others, without a config of their own


@lru_cache(maxsize=65536)
def normalise(value: str) -> str:
    """'1e-4', '0.0001' and '1.0e-04' are the same setting."""
    try:
        number = float(value)
    except ValueError:
        return value
    return repr(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)


def config_of(run: RunRecord) -> dict[str, str]:
    """The run's compared params, normalised; once per record (the changelog asks each run several times)."""
    cached = run.__dict__.get("_config")
    if cached is None:
        cached = {k: normalise(v) for k, v in run.compared_params.items()}
        object.__setattr__(run, "_config", cached)  # a derived value: the record itself stays as read
    return cached


def find_parents(runs: list[RunRecord]) -> dict[str, tuple[Optional[str], str]]:
    """run_id -> (parent run_id or None, how it was found)."""
    by_id = {r.run_id: r for r in runs}
    matrix = _config_matrix(runs)
    sane = np.array([ended_ok(r) for r in runs], dtype=bool)
    parents: dict[str, tuple[Optional[str], str]] = {}
    earlier: dict[str, list[int]] = {}  # project -> row indices of runs with a config, in start order
    for i, run in enumerate(runs):
        based_on = run.tags.get(TAG_BASED_ON)
        container = run.tags.get(TAG_PARENT)
        mine = earlier.setdefault(run.tags.get(t.TAG_PROJECT, ""), [])  # another project's run is no parent
        if based_on and based_on in by_id:
            parents[run.run_id] = (based_on, "based_on")
        elif run.kind == t.KIND_TRIAL and container in by_id:
            parents[run.run_id] = (container, "sweep")
        elif run.kind not in CONTAINER_KINDS and mine:
            parents[run.run_id] = (runs[_closest(i, mine[-WINDOW:], matrix, sane)].run_id, "closest")
        else:
            parents[run.run_id] = (None, "none")
        if run.kind not in CONTAINER_KINDS:
            mine.append(i)
    return parents


def _config_matrix(runs: list[RunRecord]) -> np.ndarray:
    """One row per run, one column per config key, each cell a value id (-1: the run lacks the key)."""
    configs = [config_of(r) for r in runs]
    keys = sorted({k for c in configs for k in c})
    column = {k: j for j, k in enumerate(keys)}
    ids: dict[tuple[int, str], int] = {}
    matrix = np.full((len(runs), len(keys)), -1, dtype=np.int32)
    for i, config in enumerate(configs):
        for key, value in config.items():
            j = column[key]
            matrix[i, j] = ids.setdefault((j, value), len(ids))
    return matrix


def ended_ok(run: RunRecord) -> bool:
    return run.status == "FINISHED" and run.tags.get(t.TAG_OUTCOME, Outcome.OK) == Outcome.OK


def _closest(row: int, candidates: list[int], matrix: np.ndarray, sane: np.ndarray) -> int:
    """Fewest differing keys (a key present in only one counts); among those a run that ended ok,
    then the most recent."""
    diffs = (matrix[candidates] != matrix[row]).sum(axis=1)
    # a crashed candidate counts as half a key further: it loses ties, never a real difference
    score = diffs * 2 + ~sane[candidates]
    last_min = len(score) - 1 - int(np.argmin(score[::-1]))
    return candidates[last_min]


def changed_keys(by_id: dict[str, RunRecord], parents: dict[str, tuple[Optional[str], str]]):
    """run -> the config keys it changed from its parent (none for a run without a config parent):
    what `phases` groups loose runs by."""

    def changed(run: RunRecord) -> frozenset:
        parent = by_id.get(parents[run.run_id][0] or "")
        if parent is None or parent.kind in CONTAINER_KINDS:
            return frozenset()
        old, new = config_of(parent), config_of(run)
        return frozenset(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))

    return changed


def config_key(run: RunRecord) -> tuple:
    """The run's config as one hashable value; once per record."""
    cached = run.__dict__.get("_config_key")
    if cached is None:
        cached = tuple(sorted(config_of(run).items()))
        object.__setattr__(run, "_config_key", cached)  # a derived value: the record itself stays as read
    return cached


def sane_twins(runs: list[RunRecord], parents: dict[str, Optional[str]], anomalous: set[str]) -> dict[str, str]:
    """child run id -> the run that replaces its anomalous parent: the latest earlier run with the
    parent's very config that ended ok and is no anomaly itself. Children without one keep theirs."""
    order = {r.run_id: i for i, r in enumerate(runs)}
    by_id = {r.run_id: r for r in runs}
    twins: dict[tuple, list[int]] = {}  # config -> the row numbers of its sane runs, in run order
    for i, run in enumerate(runs):
        if run.kind not in CONTAINER_KINDS and ended_ok(run) and run.run_id not in anomalous:
            twins.setdefault(config_key(run), []).append(i)
    swapped = {}
    for child_id, parent_id in parents.items():
        if parent_id not in anomalous or by_id[parent_id].kind in CONTAINER_KINDS:
            continue
        rows = twins.get(config_key(by_id[parent_id]), [])
        before = bisect_left(rows, order[child_id])  # the latest earlier twin, without scanning them all
        if before:
            swapped[child_id] = runs[rows[before - 1]].run_id
    return swapped


def passed_over(runs: list[RunRecord], parents: dict[str, str], anomalous: set[str]) -> dict[str, str]:
    """child run id -> the anomalous run with its parent's very config that ran between the two: the
    closer-in-time candidate the ok-first tie-break passed over, which the reader should hear of."""
    order = {r.run_id: i for i, r in enumerate(runs)}
    by_id = {r.run_id: r for r in runs}
    flukes: dict[tuple, list[int]] = {}
    for run_id in anomalous:
        if by_id[run_id].kind not in CONTAINER_KINDS:
            flukes.setdefault(config_key(by_id[run_id]), []).append(order[run_id])
    for rows in flukes.values():
        rows.sort()
    out = {}
    for child_id, parent_id in parents.items():
        rows = flukes.get(config_key(by_id[parent_id]), []) if by_id[parent_id].kind not in CONTAINER_KINDS else []
        between = [i for i in rows[bisect_right(rows, order[parent_id]) : bisect_left(rows, order[child_id])]]
        if between:
            fluke = runs[between[-1]]
            out[child_id] = fluke.tags.get(t.TAG_NAME) or fluke.name
    return out


def diff(parent: Optional[RunRecord], child: RunRecord, notable: set[str], verbose: bool) -> Changes:
    """Added / Changed (old -> new) / Removed, and Kept: notable unchanged keys (all with verbose)."""
    new = child.compared_params
    if parent is None:
        return Changes(kept=dict(sorted(new.items())) if verbose else {})
    old = parent.compared_params
    changes = Changes()
    for key in sorted(set(old) | set(new)):
        if key not in old:
            changes.added[key] = new[key]
        elif key not in new:
            changes.removed[key] = old[key]
        elif normalise(old[key]) != normalise(new[key]):
            changes.changed[key] = (old[key], new[key])
        elif verbose or key in notable:
            changes.kept[key] = new[key]
    return changes


def varying_keys(runs: list[RunRecord]) -> set[str]:
    """Keys whose value differs somewhere among these runs (a run's siblings): the ones worth
    showing as kept; the rest is "N other keys unchanged"."""
    # (key, value) pairs counted in C (a Trainer's 150 params over 10,000 runs: a loop per pair took seconds)
    pairs = Counter(chain.from_iterable(config_of(run).items() for run in runs))
    values: Counter = Counter()
    counts: Counter = Counter()
    for (key, _), n in pairs.items():
        values[key] += 1
        counts[key] += n
    return {k for k in values if values[k] > 1 or counts[k] < len(runs)}
