"""`sweep`: an Optuna study over the spec's search space; every trial a child MLflow run.

The one module that talks to Optuna. The loop is ask/tell, so tunelog decides what a
trial's end means: rejected by a rule (PRUNED, with named constraints the sampler
learns from), pruned, diverged/oom (FAIL with outcome and reason), or complete.
Studies live in storage beside the MLflow store (SQLite) or at `--storage URL`
(PostgreSQL for many machines); rerunning the same command resumes the study.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import TrialState

from . import rules, space
from . import tracking as t
from .errors import SpecError, SweepStuck, TrainingInterrupted, TunelogError
from .owner import owner_dead, owner_tag
from .plan import make_plan
from .spec import SearchSpec, Spec
from .tracking import Tracker
from .train import run_training

ATTR_RUN = "tunelog.run_id"
ATTR_OUTCOME = "tunelog.outcome"
ATTR_REASON = "tunelog.reason"
ATTR_OWNER = "tunelog.owner"  # host:pid of the worker running the trial
ATTR_CONFIG = "tunelog.config"
STUDY_RUN = "tunelog.sweep_run_id"
STUDY_SPACE = "tunelog.search"
STUDY_ENQUEUED = "tunelog.enqueued"
STUDY_HASH = "tunelog.space_hash"  # what the study searches: a different space under its name is refused
STUDY_REQUEUED = "tunelog.requeued"  # numbers of interrupted trials already queued again
INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM or a dead worker: the trial runs again on resume
HEARTBEAT_SECONDS, GRACE_SECONDS = 10, 60

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats are recorded by tunelog's own ask/tell loop (see _Heartbeat), and the matplotlib
# plots are "experimental" only in name: neither warning helps a user.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass
class SweepOptions:
    n_trials: Optional[int] = None
    timeout: Optional[float] = None
    quick: bool = False
    storage: Optional[str] = None
    study: Optional[str] = None
    workers: int = 1
    force_resume: bool = False
    refine_from: Optional[str] = None
    top_k: int = 5
    echo: Callable[[str], None] = print


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


# --- storage and study ------------------------------------------------------


def default_storage(tracker_uri: str) -> str:
    """A journal file beside the MLflow store (or under ./mlruns when the store is a server).

    A journal appends one line per change under a file lock: an order of magnitude cheaper
    per write than SQLite, safe for many processes on one machine. Many machines: --storage
    with a PostgreSQL URL (heartbeats then let a worker fail another machine's dead trials).
    """
    if tracker_uri.startswith("sqlite:///"):
        return str(Path(tracker_uri[len("sqlite:///") :]).resolve().parent / "optuna.journal")
    return str(t.default_store_dir() / "optuna.journal")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A URL (sqlite://, postgresql://...) opens an RDB storage; a plain path a journal file."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        t.tune_sqlite()
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}  # workers queue on SQLite's lock
    return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS, **kwargs)


def make_sampler(search: SearchSpec, n_trials: int) -> optuna.samplers.BaseSampler:
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    startup = min(10, max(3, n_trials // 4))
    return optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=startup, multivariate=True, constant_liar=True)


def make_pruner(spec: Spec, total_steps: int) -> optuna.pruners.BasePruner:
    assert spec.search is not None
    kind = spec.search.pruner.type
    if kind == "none" or spec.search.second_objective is not None:  # Optuna cannot prune multi-objective
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=spec.train.eval_every or 1, max_resource=total_steps)
    return optuna.pruners.MedianPruner(n_startup_trials=spec.search.pruner.startup_trials)


def directions(spec: Spec) -> list[str]:
    assert spec.search is not None
    second = spec.search.second_objective
    return [spec.tracking.direction] + ([second.direction] if second else [])


def suggest(trial: optuna.Trial, search: SearchSpec) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, p in search.params.items():
        if p.type == "categorical":
            values[name] = trial.suggest_categorical(name, p.choices)
        elif p.type == "int":
            values[name] = trial.suggest_int(name, int(p.min), int(p.max), step=int(p.step or 1), log=p.log)
        else:
            values[name] = trial.suggest_float(name, p.min, p.max, step=p.step, log=p.log)
    return values


# --- one worker's loop ---------------------------------------------------------


class Sweep:
    def __init__(self, spec: Spec, tracker: Tracker, opts: SweepOptions):
        if spec.search is None:
            raise SpecError(spec.source, [("search", "missing: a sweep needs a `search:` section with params")])
        space.check_targets(spec)
        self.opts, self.tracker = opts, tracker
        self.spec = spec.with_overrides(spec.search.quick.overrides, "search.quick.overrides") if opts.quick else spec
        self.search: SearchSpec = self.spec.search  # type: ignore[assignment]
        self.n_trials = opts.n_trials or (self.search.quick.n_trials if opts.quick else self.search.n_trials)
        self.storage_url = opts.storage or default_storage(tracker.uri)
        self.storage = open_storage(self.storage_url)
        self.study_name = opts.study or self.search.study or f"{self.spec.tracking.experiment}-sweep"
        self.narrowed: list[str] = []
        if opts.refine_from:
            self._refine(opts.refine_from)
        from .data import read_texts

        self.n_samples = len(read_texts(self.spec, self.spec.data.train, "data.train"))
        self.hidden = rules.model_hidden_size(self.spec)

    # study, resume, seeding

    def _refine(self, source: str) -> None:
        old = optuna.load_study(study_name=source, storage=self.storage)
        top = best_trials(old, self.opts.top_k)
        if not top:
            raise SweepStuck(f"study {source!r} has no completed feasible trial to refine around")
        params, self.narrowed = space.narrow(self.search.params, [tr.params for tr in top])
        self.search = self.search.model_copy(update={"params": params})
        self.spec = self.spec.model_copy(update={"search": self.search})
        if not self.opts.study:
            self.study_name = f"{source}-refined"
        self.opts.echo(f"refining {source!r} around its top {len(top)} trials into {self.study_name!r}:")
        for line in self.narrowed or ["nothing narrowed: the top trials span the whole space"]:
            self.opts.echo(f"  {line}")

    def study(self) -> optuna.Study:
        plan = make_plan(self.spec, self.n_samples)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            load_if_exists=True,
            sampler=make_sampler(self.search, self.n_trials),
            pruner=make_pruner(self.spec, plan.total_steps),
            directions=directions(self.spec),
        )
        self._check_space(study)
        if STUDY_SPACE not in study.user_attrs:
            study.set_user_attr(STUDY_SPACE, {k: v.model_dump() for k, v in self.search.params.items()})
        return study

    def space_hash(self) -> str:
        """What the study searches: params, derived params and every rule that rejects (not the budget,
        not `--quick`'s cheaper training), so the README's `--quick` then full run share one study."""
        what = {
            "params": {k: v.model_dump() for k, v in self.search.params.items()},
            "derived": self.search.derived,
            "soft": [r.model_dump() for r in self.search.soft],
            "rules": [r.model_dump() for r in rules.hard_rules(self.spec)],
        }
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def _check_space(self, study: optuna.Study) -> None:
        """Resuming is for the same search: another space under an old name would inherit its trials."""
        new, old = self.space_hash(), study.user_attrs.get(STUDY_HASH)
        if old and old != new and not self.opts.force_resume:
            raise SpecError(
                self.spec.source,
                [
                    (
                        "search",
                        f"study {self.study_name!r} was started with another search "
                        f"space (hash {old}, this spec's is {new}); accepted: "
                        f"--study NEW for a new study, or --force-resume to go "
                        f"on with this one",
                    )
                ],
            )
        if old != new:
            study.set_user_attr(STUDY_HASH, new)

    def _enqueue_named_configs(self, study: optuna.Study) -> None:
        """The spec's named configs run first, then the sampler takes over (once per study)."""
        if study.user_attrs.get(STUDY_ENQUEUED):
            return
        study.set_user_attr(STUDY_ENQUEUED, True)
        base = self.spec.flat_params()
        for name, preset in list(self.spec.configs.items())[: self.n_trials]:
            values = {**{p: base[p] for p in self.search.params if p in base}, **preset.overrides}
            kept, dropped = space.check_enqueue(self.search.params, values)
            if dropped:
                self.opts.echo(f"config {name}: outside the search space, not seeded: {', '.join(dropped)}")
            if kept:
                study.enqueue_trial(kept, user_attrs={ATTR_CONFIG: name})

    def recover(self, study: optuna.Study) -> list[int]:
        """Trials whose worker died (same host: its pid is gone; elsewhere: heartbeat stale) end as interrupted,
        their runs closed KILLED; every interrupted trial is queued again once, with the same params."""
        failed = []
        for tr in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if owner_dead(tr.user_attrs.get(ATTR_OWNER, "")):
                study._storage.set_trial_user_attr(tr._trial_id, ATTR_OUTCOME, INTERRUPTED)  # no public setter
                study.tell(tr.number, state=TrialState.FAIL, skip_if_finished=True)
                failed.append(tr.number)
        if isinstance(self.storage, optuna.storages.RDBStorage):
            failed += optuna.storages.fail_stale_trials(study) or []
        for tr in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            run_id = tr.user_attrs.get(ATTR_RUN)
            if run_id and self.tracker.close_run(run_id, "KILLED", "failed", "worker died mid-trial; failed on resume"):
                self.opts.echo(f"trial {tr.number}: its worker died; trial failed and run {run_id} closed KILLED")
        return self._requeue_interrupted(study)

    def _requeue_interrupted(self, study: optuna.Study) -> list[int]:
        """An interrupted trial did not finish, so it does not count: its params run again (Optuna's queue)."""
        done = set(study.user_attrs.get(STUDY_REQUEUED, []))
        again = [
            tr
            for tr in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if tr.user_attrs.get(ATTR_OUTCOME) == INTERRUPTED and tr.number not in done and tr.params
        ]
        for tr in again:
            attrs = {k: v for k, v in tr.user_attrs.items() if k == ATTR_CONFIG}
            study.enqueue_trial(
                tr.params, user_attrs={**attrs, "tunelog.requeued_from": tr.number}, skip_if_exists=False
            )
        if again:
            study.set_user_attr(STUDY_REQUEUED, sorted(done | {tr.number for tr in again}))
        return [tr.number for tr in again]

    # the sweep run and the loop

    def sweep_run_tags(self) -> dict[str, Any]:
        tags = {
            t.TAG_KIND: t.KIND_SWEEP,
            t.TAG_STUDY: self.study_name,
            t.TAG_NAME: self.study_name,
            t.TAG_METRIC: self.spec.tracking.metric,
            t.TAG_DIRECTION: self.spec.tracking.direction,
            "tunelog.storage": self.storage_url,
            "tunelog.refined_from": self.opts.refine_from,
            "tunelog.n_trials": self.n_trials,
            STUDY_HASH: self.space_hash(),
        }
        if self.narrowed:
            tags[t.TAG_NOTE] = "Refined search space:\n" + "\n".join(f"- {line}" for line in self.narrowed)
        return tags

    def run(self) -> SweepSummary:
        study = self.study()
        existing = os.environ.get("TUNELOG_SWEEP_RUN_ID") or study.user_attrs.get(STUDY_RUN)
        if os.environ.get("MLFLOW_RUN_ID"):
            existing = None  # `mlflow run` made this invocation's run: it becomes the sweep run
        with self.tracker.run(
            self.spec.tracking.experiment, run_name=self.study_name, tags=self.sweep_run_tags(), resume_run_id=existing
        ) as run:
            study.set_user_attr(STUDY_RUN, run.run_id)
            # the budget is a tag and a metric: a resumed sweep may be given another one
            run.log_new_params(
                {f"search.{k}": json.dumps(v.model_dump(exclude_none=True)) for k, v in self.search.params.items()}
            )
            run.log_metrics({"sweep/n_trials": self.n_trials})
            requeued = self.recover(study)
            finished = used_budget(study)
            if finished or requeued:
                self.opts.echo(
                    f"resuming study {self.study_name}: {finished} finished, {len(requeued)} re-queued, "
                    f"{max(0, self.n_trials - finished)} to go"
                )
            self._enqueue_named_configs(study)
            if self.opts.workers > 1:
                self._spawn_workers(run.run_id)
            else:
                self.loop(study, run.run_id)
            summary = analyze(study, self.tracker, run, self.spec)
        summary.storage, summary.narrowed = self.storage_url, self.narrowed
        return summary

    def work(self) -> None:
        """A `--workers` child process: trials only; the parent owns the sweep run and the analysis."""
        study = self.study()
        self.loop(study, os.environ["TUNELOG_SWEEP_RUN_ID"])

    def _spawn_workers(self, sweep_run_id: str) -> None:
        """N local worker processes on the same storage; the parent waits, then analyses."""
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
        env.update(TUNELOG_SWEEP_RUN_ID=sweep_run_id, MLFLOW_TRACKING_URI=self.tracker.uri)
        argv = [
            sys.executable,
            "-m",
            "tunelog.cli",
            "sweep",
            self.spec.source,
            "--worker",
            "--storage",
            self.storage_url,
            "--study",
            self.study_name,
            "--n-trials",
            str(self.n_trials),
        ]
        if self.opts.timeout:
            argv += ["--timeout", str(self.opts.timeout)]
        if self.opts.quick:
            argv.append("--quick")
        if self.spec.config_name:
            argv += ["--config", self.spec.config_name]
        procs = [subprocess.Popen(argv, env=env) for _ in range(self.opts.workers)]
        try:
            codes = [p.wait() for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        if any(codes):
            raise TunelogError(f"{sum(1 for c in codes if c)} of {len(codes)} workers failed (exit codes {codes})")

    def loop(self, study: optuna.Study, sweep_run_id: str) -> None:
        """Ask, judge, train, tell, until the study holds n_trials trials or the time is up."""
        start, streak, why = time.monotonic(), 0, {}
        while used_budget(study) < self.n_trials:
            if self.opts.timeout and time.monotonic() - start > self.opts.timeout:
                self.opts.echo(f"timeout of {self.opts.timeout:g}s reached")
                break
            trial = study.ask()
            if used_budget(study, before=trial.number) >= self.n_trials:  # another worker took the last slot
                trial.set_user_attr(ATTR_OUTCOME, "over_budget")
                study.tell(trial, state=TrialState.FAIL)
                break
            outcome, rule = self.run_trial(study, trial, sweep_run_id)
            streak = streak + 1 if outcome == "rejected" else 0
            if rule:
                why[rule] = why.get(rule, 0) + 1
            if streak >= self.search.max_consecutive_rejections:
                top = ", ".join(f"{r} ({n}x)" for r, n in sorted(why.items(), key=lambda kv: -kv[1])[:3])
                raise SweepStuck(
                    f"{self.spec.source}: search.constraints rejected the last {streak} configs in a "
                    f"row (most often: {top}); loosen those rules or widen search.params"
                )

    def trial_spec(self, trial: optuna.Trial, values: dict[str, Any]) -> Spec:
        preset = self.spec.configs.get(trial.user_attrs.get(ATTR_CONFIG, ""))
        overrides = {**(preset.overrides if preset else {}), **space.spec_overrides(values)}
        spec = self.spec.with_overrides(overrides, f"trial {trial.number}")
        name = f"trial-{trial.number}" + (f"-{trial.user_attrs[ATTR_CONFIG]}" if preset else "")
        return spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"run_name": name})})

    def run_trial(self, study: optuna.Study, trial: optuna.Trial, sweep_run_id: str) -> tuple[str, str]:
        """One trial from sample to tell; returns (outcome, the rule that rejected it or '')."""
        trial.set_user_attr(ATTR_OWNER, owner_tag())
        sampled = suggest(trial, self.search)
        values = {**sampled, **space.derive(self.search, sampled, self.spec.source, self.spec.flat_params())}
        spec = self.trial_spec(trial, values)
        verdict = rules.judge_config(spec, values, self.n_samples, self.hidden, self.search.seed)
        for rule, value in verdict.broken.items():
            trial.set_constraint(rule, value)  # the sampler learns where the rules bite
        tags = {
            t.TAG_KIND: t.KIND_TRIAL,
            t.TAG_STUDY: self.study_name,
            t.TAG_TRIAL: trial.number,
            t.TAG_NAME: spec.tracking.run_name,
            t.TAG_CONFIG: trial.user_attrs.get(ATTR_CONFIG),
        }
        if verdict.rejected:
            return self._reject(study, trial, spec, values, verdict, tags, sweep_run_id), verdict.rule
        return self._train(study, trial, spec, tags, sweep_run_id), ""

    def _reject(
        self, study, trial, spec: Spec, values: dict, verdict: rules.Verdict, tags: dict, sweep_run_id: str
    ) -> str:
        """Record the rejection: Optuna state and attributes, and a light MLflow run (the sampled values only)."""
        trial.set_user_attr(ATTR_OUTCOME, "rejected")
        trial.set_user_attr(ATTR_REASON, f"{verdict.rule}: {verdict.reason}")
        tags.update({t.TAG_OUTCOME: "rejected", t.TAG_REASON: f"{verdict.rule}: {verdict.reason}"})
        run_id = self.tracker.log_closed_run(
            spec.tracking.experiment, spec.tracking.run_name or "", tags, values, parent_run_id=sweep_run_id
        )
        trial.set_user_attr(ATTR_RUN, run_id)
        study.tell(trial, state=TrialState.PRUNED)
        return "rejected"

    def _train(self, study, trial, spec: Spec, tags: dict, sweep_run_id: str) -> str:
        multi = self.search.second_objective is not None

        def on_eval(step: int, loss: float) -> bool:
            if multi:
                return False
            trial.report(loss, step)
            return trial.should_prune()

        try:
            with _Heartbeat(self.storage, trial):
                run_id, result = run_training(
                    spec,
                    self.tracker,
                    kind=t.KIND_TRIAL,
                    parent_run_id=sweep_run_id,
                    extra_tags=tags,
                    on_eval=on_eval,
                    on_start=lambda rid: trial.set_user_attr(ATTR_RUN, rid),
                )
        except (KeyboardInterrupt, TrainingInterrupted):
            trial.set_user_attr(ATTR_OUTCOME, INTERRUPTED)  # not counted; queued again on resume
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as exc:  # the run is already closed FAILED by the tracker; the sweep goes on
            trial.set_user_attr(ATTR_OUTCOME, "failed")
            trial.set_user_attr(ATTR_REASON, f"{type(exc).__name__}: {exc}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            self.opts.echo(f"trial {trial.number}: failed ({type(exc).__name__}: {exc})")
            return "failed"
        trial.set_user_attr(ATTR_OUTCOME, result.outcome)
        trial.set_user_attr(ATTR_REASON, result.reason)
        value = result.metrics.get(spec.tracking.metric)
        if result.outcome == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif result.outcome != "ok" or value is None:
            if value is None and result.outcome == "ok":
                trial.set_user_attr(ATTR_REASON, f"metric {spec.tracking.metric!r} was not produced")
            study.tell(trial, state=TrialState.FAIL)
        else:
            values = [value]
            if multi:
                second = self.search.second_objective
                values.append(result.metrics.get(second.metric, float("nan")))  # type: ignore[union-attr]
            study.tell(trial, values)
        self.opts.echo(
            f"trial {trial.number}: {result.outcome}"
            f"{f' {spec.tracking.metric}={value:.4f}' if value is not None else ''} ({run_id})"
        )
        return result.outcome


class _Heartbeat:
    """Records the trial's heartbeat so a worker on another machine can tell this one died."""

    def __init__(self, storage, trial: optuna.Trial):
        self.storage, self.trial_id = storage, trial._trial_id  # Optuna exposes no public id accessor
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "_Heartbeat":
        if isinstance(self.storage, optuna.storages.RDBStorage):
            self.storage.record_heartbeat(self.trial_id)
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a missed beat is not worth a crash
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


# --- reading a study back -------------------------------------------------------


def used_budget(study: optuna.Study, before: Optional[int] = None) -> int:
    """Trials that count against n_trials: started or finished; not merely queued, not over budget,
    not interrupted (those run again). With `before`, only trials numbered below it."""
    return sum(
        1
        for tr in study.get_trials(deepcopy=False)
        if tr.state != TrialState.WAITING
        and tr.user_attrs.get(ATTR_OUTCOME) not in ("over_budget", INTERRUPTED)
        and (before is None or tr.number < before)
    )


def best_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The top-k complete, feasible trials by the first objective."""
    done = [
        tr
        for tr in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if all(v <= 0 for v in tr.constraints.values())
    ]
    reverse = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda tr: tr.values[0], reverse=reverse)[:k]


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
        if outcome == "over_budget":
            continue
        if outcome == INTERRUPTED and tr.state == TrialState.FAIL:
            out[INTERRUPTED] += 1
            continue
        if tr.state == TrialState.COMPLETE:
            out["complete"] += 1
        elif tr.state == TrialState.RUNNING:
            out["running"] += 1
        elif outcome == "rejected":
            out["rejected"] += 1
        elif tr.state == TrialState.PRUNED:
            out["pruned"] += 1
        elif tr.state == TrialState.FAIL:
            out["failed"] += 1
            if outcome in ("diverged", "oom"):
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
    top = best_trials(study, 1)
    if top:
        best = top[0]
        summary.best_value, summary.best_trial, summary.best_params = best.values[0], best.number, best.params
        summary.best_run_id = best.user_attrs.get(ATTR_RUN)
        run.log_metrics({"sweep/best_value": best.values[0]})
        run.set_tags({"tunelog.best_trial": best.number, "tunelog.best_run_id": summary.best_run_id})
        _mark_best(study, tracker, summary.best_run_id)
    if spec.search and spec.search.second_objective:
        _log_pareto(study, run, [spec.tracking.metric, spec.search.second_objective.metric])
    _log_plots(study, run, len(directions(spec)))
    return summary


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


def _mark_best(study: optuna.Study, tracker: Tracker, best_run_id: Optional[str]) -> None:
    for tr in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = tr.user_attrs.get(ATTR_RUN)
        if run_id:
            tracker.set_tags(run_id, {t.TAG_BEST: "true" if run_id == best_run_id else "false"})


def _log_plots(study: optuna.Study, run: t.RunLogger, n_objectives: int) -> None:
    """Importances (JSON and PNG) and the optimisation history, when the study has enough to show."""
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
        if importances:
            run.log_text(json.dumps(importances, indent=2), "param_importances.json")
            ax = ovm.plot_param_importances(study, target=target, target_name="objective")
            run.log_figure(ax.figure, f"{t.PLOTS_ARTIFACT}/param_importances.png")
            plt.close(ax.figure)


def load_for_analysis(study_name: str, storage_url: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage_url))]
        raise TunelogError(
            f"no study {study_name!r} in {storage_url}; studies there: {', '.join(names) or 'none'}"
        ) from None


def suggested_ranges(study: optuna.Study, k: int) -> list[str]:
    """What `--refine-from` would narrow, from the search space the study recorded."""
    from .spec import ParamSpec

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
