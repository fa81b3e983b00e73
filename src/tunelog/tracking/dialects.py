"""Runs tunelog did not write, read as tunelog reads its own: the one reader of "what this run logged".

MLflow experiments in the world are logged by transformers' `MLflowCallback` (`eval_loss`, every
TrainingArguments field, `output_dir`), TRL's trainers (the same callback), Lightning's `MLFlowLogger`
(`val_loss`, `save_hyperparameters()`), optuna-integration's `MLflowCallback` (each trial a run: its params,
the objective as `value`, tags `number`, `state`, `direction`) and hand-written loops (a parent run with
nested children). None carries a `tunelog.*` tag. `understand` gives such runs, in memory only (nothing is
written to the store), the tags tunelog's readers judge by: the kind (a trial of a study, a group that only
holds children, a training run), the headline and its direction, the outcome (diverged, failed, pruned) with
its reason, and the identity keys (paths and names that are never a change). Every verb that reads an
experiment (changelog, diff, promote) reads it through `Tracker.all_runs`, so all read it alike.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Optional

from ..vocabulary import Direction, Outcome, metric_key, names_a_place
from .contract import (
    KIND_GROUP,
    KIND_SWEEP,
    KIND_TRAIN,
    KIND_TRIAL,
    TAG_DIRECTION,
    TAG_IDENTITY_KEYS,
    TAG_KIND,
    TAG_METRIC,
    TAG_NAME,
    TAG_OUTCOME,
    TAG_PARENT,
    TAG_READ_AS,
    TAG_REASON,
    TAG_STUDY,
    RunRecord,
)

# the losses and scores the common integrations log, in the order a user would pick the headline
HEADLINES = (
    "eval_loss",
    "val_loss",
    "validation_loss",
    "valid_loss",
    "test_loss",
    "eval_accuracy",
    "val_acc",
    "val_accuracy",
    "eval_f1",
    "val_f1",
    "eval_bleu",
    "train_loss",
    "loss",
)
OPTUNA_MARKS = ("number", "direction", "datetime_start")  # optuna-integration's MLflowCallback tags
_NOT_TRAINING = ("system/",)  # metrics a container logs without training (MLflow's system metrics)


def is_native(run: RunRecord) -> bool:
    """A run no tunelog verb wrote (no `tunelog.kind`)."""
    return TAG_KIND not in run.tags


def understand(runs: list[RunRecord]) -> list[RunRecord]:
    """The runs, those tunelog did not write given the tags its readers judge by (in memory only)."""
    native = [r for r in runs if is_native(r)]
    if not native:
        return runs
    children: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.tags.get(TAG_PARENT):
            children[run.tags[TAG_PARENT]].append(run)
    studies = _studies(native)
    headline, why = native_headline([r for r in native if not _holds_only_children(r, children)])
    out: list[RunRecord] = []
    for run in runs:
        if not is_native(run):
            out.append(run)
            continue
        out.append(_read(run, children, studies, headline, why))
    return _with_study_runs(out, studies)


def native_headline(runs: list[RunRecord]) -> tuple[Optional[str], str]:
    """The headline a user would pick among these runs' metrics, spelled as they logged it, and why."""
    if not runs:
        return None, ""
    spelled: dict[str, Counter] = defaultdict(Counter)
    for run in runs:
        for key in run.metrics:
            spelled[metric_key(key)][key] += 1
    for candidate in HEADLINES:
        logged = spelled.get(candidate)
        if logged and 4 * sum(logged.values()) >= len(runs):
            name = logged.most_common(1)[0][0]
            return name, f"`{name}`, logged by {sum(logged.values())} of {len(runs)} runs (the usual {candidate})"
    return None, ""


def _studies(native: list[RunRecord]) -> dict[str, str]:
    """run_id -> the study it is a trial of (optuna-integration: its tags; the study is its experiment, or
    the parent run the trials are nested in)."""
    out = {}
    for run in native:
        if all(mark in run.tags for mark in OPTUNA_MARKS):
            out[run.run_id] = run.tags.get(TAG_PARENT) or f"study:{run.experiment_id}"
    return out


def _holds_only_children(run: RunRecord, children: dict[str, list[RunRecord]]) -> bool:
    """A parent run that trained nothing itself: a group of its children, not a baseline or a candidate."""
    return bool(children.get(run.run_id)) and not any(not k.startswith(_NOT_TRAINING) for k in run.metrics)


def _read(
    run: RunRecord,
    children: dict[str, list[RunRecord]],
    studies: dict[str, str],
    headline: Optional[str],
    why: str,
) -> RunRecord:
    tags = dict(run.tags)
    study = studies.get(run.run_id)
    if study is not None:
        metric, direction = _optuna_headline(run)
        tags.update({TAG_KIND: KIND_TRIAL, TAG_STUDY: run.experiment_name, TAG_PARENT: study})
        why = f"`{metric}`, the objective optuna-integration logs ({direction.describe()}: the study's direction)"
    elif run.run_id in studies.values():
        tags[TAG_KIND], metric, direction = KIND_SWEEP, headline, None
    elif _holds_only_children(run, children):
        tags[TAG_KIND], metric, direction = KIND_GROUP, headline, None
    else:
        tags[TAG_KIND], metric, direction = KIND_TRAIN, headline, None
    if metric:
        tags[TAG_METRIC] = metric
        tags[TAG_DIRECTION] = str(direction or Direction.guess(metric))
        tags[TAG_READ_AS] = why
    tags.setdefault(TAG_NAME, run.name)
    outcome, reason = outcome_of(run, tags.get(TAG_METRIC))
    tags[TAG_OUTCOME] = str(outcome)
    if reason:
        tags[TAG_REASON] = reason
    identity = identity_keys(run)
    if identity:
        tags[TAG_IDENTITY_KEYS] = ",".join(sorted(identity))
    return replace(run, tags=tags)


def _optuna_headline(run: RunRecord) -> tuple[str, Direction]:
    """The objective's metric (`value` unless the callback was given another name) and the study's way."""
    logged = [k for k in run.metrics if not k.startswith(_NOT_TRAINING)]
    metric = "value" if "value" in run.metrics or not logged else logged[0]
    way = run.tags.get("direction", "MINIMIZE").upper()
    return metric, Direction.MAXIMIZE if way.startswith("MAX") or "MAXIMIZE" in way else Direction.MINIMIZE


def outcome_of(run: RunRecord, metric: Optional[str]) -> tuple[Outcome, str]:
    """How a run MLflow holds ended: Optuna's trial state, MLflow's status, a non-finite loss or headline."""
    state = run.tags.get("state", "").upper() if all(m in run.tags for m in OPTUNA_MARKS) else ""
    if state == "PRUNED":
        return Outcome.PRUNED, "pruned by its Optuna study (its value is an intermediate one, never compared)"
    if state == "FAIL":
        return Outcome.FAILED, "its Optuna trial failed"
    nonfinite = next(
        (
            (k, v)
            for k, v in sorted(run.metrics.items())
            if (k == metric or "loss" in k.lower()) and not math.isfinite(v)
        ),
        None,
    )
    if nonfinite:
        return Outcome.DIVERGED, f"{nonfinite[0]} is {nonfinite[1]} (as MLflow holds it)"
    if run.status == "FAILED":
        note = run.tags.get("mlflow.note.content", "").strip().splitlines()
        return Outcome.FAILED, "MLflow status FAILED" + (f": {note[0][:200]}" if note else "")
    if run.status == "KILLED":
        return Outcome.FAILED, "MLflow status KILLED (stopped before its end)"
    if run.status == "RUNNING":
        return Outcome.INCOMPLETE, "MLflow status RUNNING (still training, or a process that never closed it)"
    return Outcome.OK, ""


def identity_keys(run: RunRecord) -> set[str]:
    """Params that name the run or where it wrote: by name, or a path with the run's own name as a folder."""
    name = run.name if len(run.name or "") >= 3 else None
    return {
        k
        for k, v in run.params.items()
        if names_a_place(k) or (name is not None and isinstance(v, str) and "/" in v and name in v.split("/"))
    }


def _with_study_runs(runs: list[RunRecord], studies: dict[str, str]) -> list[RunRecord]:
    """A study whose trials have no parent run gets one in memory (`study:EXPERIMENT_ID`), so it is told as
    a sweep: a trials table, its best trial, pruned trials counted, not a chain of edits."""
    virtual = {s for s in studies.values() if s.startswith("study:")}
    out = list(runs)
    for study in sorted(virtual):
        trials = [r for r in runs if r.tags.get(TAG_PARENT) == study]
        first = min(trials, key=lambda r: r.start_ms)
        out.append(
            RunRecord(
                run_id=study,
                name=first.experiment_name,
                status="FINISHED",
                start_ms=first.start_ms,
                end_ms=max((r.end_ms or r.start_ms for r in trials), default=None),
                params={},
                metrics={},
                tags={
                    TAG_KIND: KIND_SWEEP,
                    TAG_NAME: first.experiment_name,
                    TAG_STUDY: first.experiment_name,
                    TAG_METRIC: first.tags.get(TAG_METRIC, "value"),
                    TAG_DIRECTION: first.tags.get(TAG_DIRECTION, str(Direction.MINIMIZE)),
                    TAG_READ_AS: "the Optuna study its trials were logged by (no run of its own)",
                },
                experiment_id=first.experiment_id,
                experiment_name=first.experiment_name,
            )
        )
    return sorted(out, key=lambda r: (r.start_ms, r.run_id not in virtual))  # a study before its trials
