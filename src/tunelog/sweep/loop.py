"""One worker's loop: ask, judge, train, tell, until the study holds its budget of trials.

The loop is ask/tell, so tunelog decides what a trial's end means: rejected by a rule
(PRUNED, with named constraints the sampler learns from), pruned, diverged/oom (FAIL with
outcome and reason), interrupted (FAIL, queued again on resume), or complete. Every trial
is a child MLflow run of the sweep run; rerunning the same command resumes the study.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import optuna
from optuna.trial import TrialState

from .. import tracking as t
from ..errors import SpecError, SweepStuck, TrainingInterrupted
from ..spec import SearchSpec, Spec, flatten, rules, space
from ..spec.plan import make_plan
from ..tracking import RunLogger, Tracker
from ..train import run_training
from ..training.facts import model_hidden_size
from ..util.owner import on_this_host, owner_tag
from ..util.redact import redact_url
from ..vocabulary import Outcome
from .analysis import REFINED, SweepSummary, analyze, best_trials, counts
from .heartbeat import HEARTBEAT_SECONDS, Heartbeat
from .names import short_values
from .study import (
    ATTR_CONFIG,
    ATTR_OUTCOME,
    ATTR_OWNER,
    ATTR_REASON,
    ATTR_RUN,
    INTERRUPTED,
    STUDY_HASH,
    STUDY_RUN,
    STUDY_SPACE,
    check_space,
    claim,
    default_storage,
    directions,
    enqueue_named_configs,
    failed_trials,
    make_pruner,
    make_sampler,
    open_storage,
    recover,
    retry_failed,
    running_elsewhere,
    space_hash,
    suggest,
    take_seat,
    used_budget,
    wait_for_sweep_run,
)
from .warmup import Gate
from .workers import spawn_workers


@dataclass
class SweepOptions:
    n_trials: Optional[int] = None
    timeout: Optional[float] = None
    quick: bool = False
    storage: Optional[str] = None
    study: Optional[str] = None
    workers: int = 1
    gpus_per_trial: int = 1  # GPUs each --workers process gets (CUDA_VISIBLE_DEVICES)
    force_resume: bool = False
    overrides: tuple[str, ...] = ()  # the --set items as given, passed on to --workers processes
    refine_from: Optional[str] = None
    top_k: int = 5
    retry_failed: bool = False  # failed trials' params queued again (they stop counting against n_trials)
    echo: Callable[[str], None] = print


class Sweep:
    def __init__(self, spec: Spec, tracker: Tracker, opts: SweepOptions):
        if spec.search is None:
            raise SpecError(spec.source, [("search", "missing: a sweep needs a `search:` section with params")])
        space.check_targets(spec)
        self.opts, self.tracker = opts, tracker
        self.failures: list[tuple[int, str, Optional[str]]] = []  # (trial, reason, run id) of trials that failed
        self.spec = spec.with_overrides(spec.search.quick.overrides, "search.quick.overrides") if opts.quick else spec
        self.search: SearchSpec = self.spec.search  # type: ignore[assignment]
        self.n_trials = opts.n_trials or (self.search.quick.n_trials if opts.quick else self.search.n_trials)
        self.storage_url = opts.storage or default_storage(tracker.uri)
        self.storage = open_storage(self.storage_url)
        self.study_name = opts.study or self.search.study or f"{self.spec.tracking.experiment}-sweep"
        self.narrowed: list[str] = []
        if opts.refine_from:
            self._refine(opts.refine_from)
        from ..training.data import count_samples

        self.n_samples = count_samples(self.spec, self.spec.data.train, "data.train")
        self.hidden = model_hidden_size(self.spec)

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
            pruner=make_pruner(self.spec, plan.total_steps),
            directions=directions(self.spec),
        )
        check_space(study, space_hash(self.spec, self.search), self.spec.source, self.opts.force_resume)
        study.sampler = make_sampler(self.search, self.n_trials, take_seat(study))
        if STUDY_SPACE not in study.user_attrs:
            study.set_user_attr(STUDY_SPACE, {k: v.model_dump() for k, v in self.search.params.items()})
        return study

    # the sweep run and the loop

    def sweep_run_tags(self) -> dict[str, Any]:
        tags = {
            t.TAG_KIND: t.KIND_SWEEP,
            t.TAG_STUDY: self.study_name,
            t.TAG_NAME: self.study_name,
            t.TAG_METRIC: self.spec.tracking.metric,
            t.TAG_DIRECTION: self.spec.tracking.direction,
            t.TAG_STORAGE: redact_url(self.storage_url),
            t.TAG_REFINED_FROM: self.opts.refine_from,
            t.TAG_N_TRIALS: self.n_trials,
            STUDY_HASH: space_hash(self.spec, self.search),
        }
        if self.narrowed:
            tags[t.TAG_NOTE] = f"{REFINED}\n" + "\n".join(f"- {line}" for line in self.narrowed)
        return tags

    def _sweep_run_to_join(self, study: optuna.Study) -> Optional[str]:
        """The study's one sweep run: the one it has, else None for the invocation that claims the start
        (it makes the run), else the run the claimant is making: many invocations, one tree."""
        if os.environ.get("MLFLOW_RUN_ID"):
            return None  # `mlflow run` made this invocation's run: it becomes the sweep run
        existing = os.environ.get("TUNELOG_SWEEP_RUN_ID") or study.user_attrs.get(STUDY_RUN)
        if existing or claim(study, "start"):
            return existing
        return wait_for_sweep_run(study)

    def run(self) -> SweepSummary:
        study = self.study()
        existing = self._sweep_run_to_join(study)
        with self.tracker.run(
            self.spec.tracking.experiment, run_name=self.study_name, tags=self.sweep_run_tags(), resume_run_id=existing
        ) as run:
            if study.user_attrs.get(STUDY_RUN) != run.run_id:
                study.set_user_attr(STUDY_RUN, run.run_id)
            # the budget is a tag and a metric: a resumed sweep may be given another one
            run.log_new_params(
                {f"search.{k}": json.dumps(v.model_dump(exclude_none=True)) for k, v in self.search.params.items()}
            )
            run.log_metrics({"sweep/n_trials": self.n_trials})
            requeued = recover(study, self.tracker, self.opts.echo, startup=True)
            if self.opts.retry_failed:
                requeued += retry_failed(study)
            finished = used_budget(study)
            if finished or requeued:
                self.opts.echo(
                    f"resuming study {self.study_name}: {finished} finished, {len(requeued)} re-queued, "
                    f"{max(0, self.n_trials - finished)} to go"
                )
            if failed := failed_trials(study):
                self.opts.echo(
                    f"{len(failed)} failed trial(s) ({', '.join(str(tr.number) for tr in failed)}) count as done: "
                    f"rerun with --retry-failed to run their params again"
                )
            enqueue_named_configs(study, self.spec, self.search, self.n_trials, self.opts.echo)
            if self.opts.workers > 1:
                spawn_workers(self, run.run_id)
            else:
                self.loop(study, run.run_id)
            elsewhere = self._others_still_training(study, run.run_id)
            if elsewhere:  # they close the sweep run and analyse when the last of them ends
                run.leave_open(elsewhere[0].user_attrs.get(ATTR_OWNER, ""))
                self.opts.echo(
                    f"done here; {len(elsewhere)} trial(s) still training elsewhere (trial "
                    f"{', '.join(str(tr.number) for tr in elsewhere)}): the last invocation to finish closes "
                    f"sweep run {run.run_id} and analyses the study"
                )
                return SweepSummary(self.study_name, self.storage_url, run.run_id, counts(study), deferred=True)
            summary = analyze(study, self.tracker, run, self.spec)
        summary.storage, summary.narrowed = self.storage_url, self.narrowed
        return summary

    def work(self) -> None:
        """A `--workers` child process: trials only; the parent owns the sweep run and the analysis."""
        study = self.study()
        self.loop(study, os.environ["TUNELOG_SWEEP_RUN_ID"])

    def _others_still_training(self, study: optuna.Study, sweep_run_id: str) -> list:
        """Trials other invocations still train. Where their death can be told (a heartbeat in an RDB
        storage, or a pid on this host), wait for them, and run any that died (re-queued) here, so that
        a killed machine's trial is not left behind; elsewhere, leave them to their own invocation."""
        me = owner_tag()
        said = False
        while True:
            # a worker may have died after this one's loop last looked: the budget it saw full counted
            # that worker's trial, which running_elsewhere no longer lists; run it here before closing
            if recover(study, self.tracker, self.opts.echo):
                self.loop(study, sweep_run_id)
            elsewhere = running_elsewhere(study, me)
            knowable = isinstance(study._storage, optuna.storages.RDBStorage) or all(
                on_this_host(tr.user_attrs.get(ATTR_OWNER, "")) for tr in elsewhere
            )
            if not elsewhere or not knowable:
                return elsewhere
            if not said:
                self.opts.echo(f"waiting for {len(elsewhere)} trial(s) training elsewhere before closing the sweep")
                said = True
            time.sleep(HEARTBEAT_SECONDS)

    def loop(self, study: optuna.Study, sweep_run_id: str) -> None:
        """Ask, judge, train, tell, until the study holds n_trials trials or the time is up. Before each
        trial, trials of dead workers (this host's or, with heartbeats, any machine's) are re-queued."""
        start, streak, why = time.monotonic(), 0, {}
        while True:
            recover(study, self.tracker, self.opts.echo)
            if used_budget(study) >= self.n_trials:
                break
            if self.opts.timeout and time.monotonic() - start > self.opts.timeout:
                self.opts.echo(f"timeout of {self.opts.timeout:g}s reached")
                break
            trial = study.ask()
            if used_budget(study, before=trial.number) >= self.n_trials:  # another worker took the last slot
                trial.set_user_attr(ATTR_OUTCOME, Outcome.OVER_BUDGET)
                study.tell(trial, state=TrialState.FAIL)
                break
            outcome, rule = self.run_trial(study, trial, sweep_run_id)
            streak = streak + 1 if outcome == Outcome.REJECTED else 0
            if rule:
                why[rule] = why.get(rule, 0) + 1
            if streak >= self.search.max_consecutive_rejections:
                top = ", ".join(f"{r} ({n}x)" for r, n in sorted(why.items(), key=lambda kv: -kv[1])[:3])
                raise SweepStuck(
                    f"{self.spec.source}: search.constraints rejected the last {streak} configs in a "
                    f"row (most often: {top}); loosen those rules or widen search.params"
                )

    def trial_spec(self, trial: optuna.Trial, values: dict[str, Any]) -> Spec:
        """The trial's spec: sampled and derived values, and a named config's overrides as written."""
        preset = self.spec.configs.get(trial.user_attrs.get(ATTR_CONFIG, ""))
        overrides = {**space.spec_overrides(values), **(flatten(preset.overrides) if preset else {})}
        spec = self.spec.with_overrides(overrides, f"trial {trial.number}")
        name = f"trial-{trial.number} " + (trial.user_attrs[ATTR_CONFIG] if preset else short_values(trial.params))
        return spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"run_name": name})})

    def trial_values(self, trial: optuna.Trial, sampled: dict[str, Any]) -> dict[str, Any]:
        """Sampled and derived values. A named config runs as written: the spec with its overrides, derived
        params computed only for fields neither sets (a sampled `alpha_ratio` must not re-derive the
        `lora.alpha` that `demo.yaml` or the config writes), and those values stand for the fields."""
        preset = self.spec.configs.get(trial.user_attrs.get(ATTR_CONFIG, ""))
        base = self.spec.flat_params()
        written = (
            {**{k: base[k] for k in self.search.derived if k in base}, **flatten(preset.overrides)} if preset else {}
        )
        fixed = {**self.spec.flat_params(), **written}
        derived = space.derive(self.search, {**sampled, **written}, self.spec.source, fixed)
        values = {**sampled, **{k: v for k, v in derived.items() if k not in written}}
        return {**values, **{k: v for k, v in written.items() if k in values or k in self.search.derived}}

    def run_trial(self, study: optuna.Study, trial: optuna.Trial, sweep_run_id: str) -> tuple[str, str]:
        """One trial from sample to tell; returns (outcome, the rule that rejected it or '')."""
        trial.set_user_attr(ATTR_OWNER, owner_tag())
        sampled = suggest(trial, self.search)
        values = self.trial_values(trial, sampled)
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
        trial.set_user_attr(ATTR_OUTCOME, Outcome.REJECTED)
        trial.set_user_attr(ATTR_REASON, f"{verdict.rule}: {verdict.reason}")
        tags.update({t.TAG_OUTCOME: Outcome.REJECTED, t.TAG_REASON: f"{verdict.rule}: {verdict.reason}"})
        run_id = self.tracker.log_closed_run(
            spec.tracking.experiment, spec.tracking.run_name or "", tags, values, sweep_run_id, status="KILLED"
        )
        trial.set_user_attr(ATTR_RUN, run_id)
        study.tell(trial, state=TrialState.PRUNED)
        self.progress(study, trial.number, Outcome.REJECTED, spec.tracking.metric, None, 0.0, verdict.rule)
        return Outcome.REJECTED

    def _started(self, trial: optuna.Trial, run: RunLogger) -> None:
        """The trial knows its run; the run records the sweep helpers it was derived from (`alpha_ratio`:
        no spec field holds them, and the leaderboard and `diff` compare them), with the spec's params."""
        trial.set_user_attr(ATTR_RUN, run.run_id)
        run.later(params={k: v for k, v in trial.params.items() if k in self.search.params and "." not in k})

    def _train(self, study, trial, spec: Spec, tags: dict, sweep_run_id: str) -> str:
        # a study with two objectives prunes nothing; without a pruner, nothing reads the reports either (each
        # is a write to the study's storage, ten per cheap trial)
        judged = self.search.second_objective is None and self.search.pruner.type != "none"
        started = time.monotonic()
        gate = Gate(spec, self.n_samples)

        def on_eval(step: int, loss: float) -> bool:
            if not judged:
                return False
            trial.report(loss, step)
            return gate.open(step) and trial.should_prune()

        try:
            with Heartbeat(self.storage, trial):
                run_id, result = run_training(
                    spec,
                    self.tracker,
                    kind=t.KIND_TRIAL,
                    parent_run_id=sweep_run_id,
                    extra_tags=tags,
                    on_eval=on_eval,
                    on_start=lambda run: self._started(trial, run),
                )
        except (KeyboardInterrupt, TrainingInterrupted):
            trial.set_user_attr(ATTR_OUTCOME, INTERRUPTED)  # not counted; queued again on resume
            study.tell(trial, state=TrialState.FAIL)
            self.opts.echo(
                f"trial {trial.number}/{self.n_trials}: interrupted, {time.monotonic() - started:.0f} s; "
                f"the same command resumes the study and runs this trial again"
            )
            raise
        except Exception as exc:  # the run is already closed FAILED by the tracker; the sweep goes on
            trial.set_user_attr(ATTR_OUTCOME, Outcome.FAILED)
            trial.set_user_attr(ATTR_REASON, f"{type(exc).__name__}: {exc}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            self.opts.echo(f"trial {trial.number}/{self.n_trials}: failed ({type(exc).__name__}: {exc})")
            self.failures.append((trial.number, f"{type(exc).__name__}: {exc}", trial.user_attrs.get(ATTR_RUN)))
            return Outcome.FAILED
        value = result.metrics.get(spec.tracking.metric)
        outcome, reason = result.outcome, result.reason
        if outcome == Outcome.OK and value is None:  # trained, but no result: the run says so as the study does
            outcome, reason = Outcome.FAILED, f"metric {spec.tracking.metric!r} was not produced"
            self.tracker.set_tags(run_id, {t.TAG_OUTCOME: outcome, t.TAG_REASON: reason})
        trial.set_user_attr(ATTR_OUTCOME, outcome)
        if reason:
            trial.set_user_attr(ATTR_REASON, reason)
        if outcome not in (Outcome.OK, Outcome.PRUNED):
            self.failures.append((trial.number, reason, run_id))
        if outcome == Outcome.PRUNED:
            study.tell(trial, state=TrialState.PRUNED)
        elif outcome != Outcome.OK:
            study.tell(trial, state=TrialState.FAIL)
        else:
            values = [value]
            if self.search.second_objective is not None:
                second = self.search.second_objective
                values.append(result.metrics.get(second.metric, float("nan")))  # type: ignore[union-attr]
            study.tell(trial, values)
        self.progress(study, trial.number, outcome, spec.tracking.metric, value, time.monotonic() - started, reason)
        return outcome

    def progress(
        self, study, number: int, outcome: str, metric: str, value: Optional[float], seconds: float, reason: str = ""
    ) -> None:
        """One line per trained trial, in the study's own words: `trial 7/20: ok, eval/loss 4.381 (best 4.312),
        12 s`; `trial 3/20: failed (exit code 1: ValueError: bad lr), 4 s`."""
        top = best_trials(study, 1)
        shown = f", {metric} {value:.4g}" if value is not None and outcome == Outcome.OK else ""
        best = f" (best {top[0].values[0]:.4g})" if top else ""
        why = f" ({reason[:200]})" if reason and outcome != Outcome.OK else ""
        self.opts.echo(f"trial {number}/{self.n_trials}: {outcome}{why}{shown}{best}, {seconds:.0f} s")
