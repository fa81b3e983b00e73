"""Reading a study back: counts by outcome, the best trials, the Pareto front, importances and plots
on the sweep run, the ranges `--refine-from` would search, and the best trial for `stages --from-sweep`."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import optuna
from optuna.trial import TrialState

from .. import tracking as t
from ..errors import SweepStuck
from ..spec import Spec, space
from ..tracking import Tracker
from ..vocabulary import Direction, Outcome
from .study import (
    ATTR_CONFIG,
    ATTR_OUTCOME,
    ATTR_RUN,
    INTERRUPTED,
    STUDY_SPACE,
    default_storage,
    directions,
    load_for_analysis,
)


@dataclass
class SweepSummary:
    study: str
    storage: str
    sweep_run_id: str
    counts: dict[str, int] = field(default_factory=dict)
    best_value: Optional[float] = None
    best_trial: Optional[int] = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run_id: Optional[str] = None
    narrowed: list[str] = field(default_factory=list)
    deferred: bool = False  # trials still train elsewhere: the last invocation to finish analyses


def best_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The top-k complete, feasible trials by the first objective."""
    done = [
        tr
        for tr in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if all(v <= 0 for v in tr.constraints.values())
    ]
    direction = Direction(study.directions[0].name.lower())  # ties: the lower trial number, as Optuna's best
    return sorted(done, key=lambda tr: direction.sort_key(tr.values[0]))[:k]


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete, feasible trials that no other such trial matches or beats in every objective
    (rejected and infeasible trials never push a trial off the front)."""
    signs = [1 if d == optuna.study.StudyDirection.MINIMIZE else -1 for d in study.directions]
    done = [
        tr
        for tr in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if all(v <= 0 for v in tr.constraints.values()) and all(math.isfinite(v) for v in tr.values)
    ]
    keys = [tuple(s * v for s, v in zip(signs, tr.values)) for tr in done]

    def dominated(k: tuple) -> bool:
        return any(o != k and all(a <= b for a, b in zip(o, k)) for o in keys)

    return [tr for tr, k in zip(done, keys) if not dominated(k)]


def counts(study: optuna.Study) -> dict[str, int]:
    out = {
        "complete": 0,
        "pruned": 0,
        "rejected": 0,
        "failed": 0,
        "diverged": 0,
        "oom": 0,
        "running": 0,
        INTERRUPTED: 0,
    }
    for tr in study.get_trials(deepcopy=False):
        outcome = tr.user_attrs.get(ATTR_OUTCOME)
        if outcome == Outcome.OVER_BUDGET:
            continue
        if outcome == INTERRUPTED and tr.state == TrialState.FAIL:
            out[INTERRUPTED] += 1
            continue
        if tr.state == TrialState.COMPLETE:
            out["complete"] += 1
        elif tr.state == TrialState.RUNNING:
            out["running"] += 1
        elif outcome == Outcome.REJECTED:
            out["rejected"] += 1
        elif tr.state == TrialState.PRUNED:
            out["pruned"] += 1
        elif tr.state == TrialState.FAIL:
            out["failed"] += 1
            if outcome in (Outcome.DIVERGED, Outcome.OOM):
                out[outcome] += 1
    return out


def analyze(study: optuna.Study, tracker: Tracker, run: t.RunLogger, spec: Spec) -> SweepSummary:
    """Summary metrics, the best trial marked, importances and history plots on the sweep run."""
    c = counts(study)
    trained = c["complete"] + c["failed"] + c["pruned"]
    run.log_metrics(
        {f"sweep/{k}": v for k, v in c.items()}
        | {
            "sweep/stable_share": (c["complete"] + c["pruned"]) / trained if trained else 0.0,
            "sweep/catastrophic": c["diverged"] + c["oom"],
        }
    )
    summary = SweepSummary(study=study.study_name, storage="", sweep_run_id=run.run_id, counts=c)
    before = tracker.get_run(run.run_id).tags  # the best run so far; a refined sweep's note says what it narrowed
    top = best_trials(study, 1)
    if top:
        best = top[0]
        summary.best_value, summary.best_trial, summary.best_params = best.values[0], best.number, best.params
        summary.best_run_id = best.user_attrs.get(ATTR_RUN)
        run.log_metrics(
            {"sweep/best_value": best.values[0], t.SCORE_METRIC: t.score(best.values[0], spec.tracking.direction)}
        )
        run.later(tags={t.TAG_BEST_TRIAL: best.number, t.TAG_BEST_RUN_ID: summary.best_run_id})  # with the note
        _mark_best(tracker, before.get(t.TAG_BEST_RUN_ID), summary.best_run_id)
    if spec.search and spec.search.second_objective:
        _log_pareto(study, run, [spec.tracking.metric, spec.search.second_objective.metric])
    _log_plots(study, run, len(directions(spec)))
    note = before.get(t.TAG_NOTE, "")
    refined = note[note.index(REFINED) :] if REFINED in note else ""
    run.set_tags({t.TAG_NOTE: "\n\n".join(p for p in (leaderboard(study, spec.tracking.metric, c), refined) if p)})
    return summary


REFINED = "Refined search space:"


def leaderboard(study: optuna.Study, metric: str, c: dict[str, int], k: int = 10) -> str:
    """The sweep run's note in the MLflow UI: its top trials in Markdown (the params that vary, the headline,
    the outcome, the run) and the trials counted by outcome."""
    top = best_trials(study, k)
    varying = sorted({n for tr in top for n in tr.params if len({str(o.params.get(n)) for o in top}) > 1})
    head = ["| # | trial | " + " | ".join(f"`{n}`" for n in varying) + f" | {metric} | run |"]
    head.append("|" + " --- |" * (len(varying) + 4))
    rows = [
        f"| {i} | {tr.number}{' ' + tr.user_attrs[ATTR_CONFIG] if tr.user_attrs.get(ATTR_CONFIG) else ''} | "
        + " | ".join(_cell(tr.params.get(n)) for n in varying)
        + f" | {tr.values[0]:.4g} | `{tr.user_attrs.get(ATTR_RUN, '')}` |"
        for i, tr in enumerate(top, 1)
    ]
    counted = ", ".join(f"{v} {k}" for k, v in c.items() if v)
    return "\n".join([f"**Sweep {study.study_name}**: {counted or 'no trials yet'}.", "", *head, *rows])


def _cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _log_pareto(study: optuna.Study, run: t.RunLogger, names: list[str]) -> None:
    """The trade-off a second objective asks about: the front's trials (JSON) and the front (PNG)."""
    front = sorted(pareto_front(study), key=lambda tr: tr.values[0])
    rows = [
        {"trial": tr.number, **dict(zip(names, tr.values)), "run_id": tr.user_attrs.get(ATTR_RUN), "params": tr.params}
        for tr in front
    ]
    run.log_text(json.dumps(rows, indent=2, default=str), "pareto_front.json")
    run.log_metrics({"sweep/pareto_size": len(front)})
    if not front:
        return
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" notice from optuna's matplotlib backend
        ax = ovm.plot_pareto_front(study, target_names=names)
    run.log_figure(ax.figure, f"{t.PLOTS_ARTIFACT}/pareto_front.png")


def _mark_best(tracker: Tracker, previous: Optional[str], best_run_id: Optional[str]) -> None:
    """`tunelog.best` "true" on the best trial's run, "false" on the run that was best before it (a resumed
    sweep's best can change): two writes at most, where one per trial made a twentieth of a sweep's cost."""
    if previous and previous != best_run_id:
        tracker.set_tags(previous, {t.TAG_BEST: "false"})
    if best_run_id:
        tracker.set_tags(best_run_id, {t.TAG_BEST: "true"})


def _log_plots(study: optuna.Study, run: t.RunLogger, n_objectives: int) -> None:
    """Importances (JSON and PNG: of two params or more) and the optimisation history, when the study has
    enough to show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    target = (lambda tr: tr.values[0]) if n_objectives > 1 else None
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) >= 2:
        ax = ovm.plot_optimization_history(study, target=target, target_name="objective")
        run.log_figure(ax.figure, f"{t.PLOTS_ARTIFACT}/optimization_history.png")
        plt.close(ax.figure)
        try:
            importances = optuna.importance.get_param_importances(study, target=target)
        except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every trial had the same params
            importances = {}
        if len(importances) > 1:  # one param searched: it is all of the importance, a chart of one bar says nothing
            run.log_text(json.dumps(importances, indent=2), "param_importances.json")
            ax = ovm.plot_param_importances(study, target=target, target_name="objective")
            run.log_figure(ax.figure, f"{t.PLOTS_ARTIFACT}/param_importances.png")
            plt.close(ax.figure)


def suggested_ranges(study: optuna.Study, k: int) -> list[str]:
    """What `--refine-from` would narrow, from the search space the study recorded."""
    from ..spec import ParamSpec

    params = {n: ParamSpec.model_validate(p) for n, p in study.user_attrs.get(STUDY_SPACE, {}).items()}
    return space.narrow(params, [tr.params for tr in best_trials(study, k)])[1]


def best_trial_overrides(spec: Spec, study_name: str, storage: Optional[str] = None) -> dict[str, Any]:
    """The best trial's sampled and derived values that target spec fields (`stages --from-sweep`)."""
    study = load_for_analysis(study_name, storage or default_storage(t.tracking_uri()))
    top = best_trials(study, 1)
    if not top:
        raise SweepStuck(f"study {study_name!r} has no completed feasible trial to start from")
    values = dict(top[0].params)
    if spec.search is not None:
        values.update(space.derive(spec.search, values, spec.source, spec.flat_params()))
    return space.spec_overrides(values)
