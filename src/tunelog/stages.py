"""`stages`: a staged fine-tune where stage N starts from stage N-1's adapter.

One pipeline run holds a child run per stage (`tunelog.kind=stage`, `tunelog.based_on` the
previous stage). Rerunning skips every stage already FINISHED with the same resolved config
(its spec hash includes the adapter it starts from, so a changed stage reruns the rest);
`--from-stage K` reruns from K. `--baseline` adds a single-stage run of the same total steps
on the last stage's data, and the pipeline run reports both results side by side.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from . import tracking as t
from .errors import SpecError, TrainingFailed
from .spec import Spec, StageSpec
from .tracking import Tracker
from .train import run_training
from .training.facts import plan_for
from .vocabulary import Outcome


@dataclass
class StageOutcome:
    name: str
    run_id: str
    reused: bool
    result: Optional[float]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class PipelineOutcome:
    run_id: str
    stages: list[StageOutcome]
    baseline: Optional[StageOutcome] = None
    verdict: str = ""

    def winner(self, direction: str) -> StageOutcome:
        last = self.stages[-1]
        if self.baseline is None or self.baseline.result is None or last.result is None:
            return last
        return self.baseline if t.better(self.baseline.result, last.result, direction) else last


def stage_spec(base: Spec, index: int, previous_run: Optional[str]) -> Spec:
    """Stage `index`'s full spec: its data, its length, its overrides, and where it starts from."""
    assert base.pipeline is not None
    stages = base.pipeline.stages
    stage: StageSpec = stages[index]
    overrides: dict[str, Any] = {"data.train": stage.train, "data.eval": stage.eval, "tracking.run_name": stage.name}
    if stage.max_steps:
        overrides["train.max_steps"] = stage.max_steps
    elif stage.epochs:
        overrides.update({"train.epochs": stage.epochs, "train.max_steps": None})
    if base.pipeline.eval_previous:
        overrides["data.extra_eval"] = {s.name: s.eval for s in stages[: index + 1] if s.eval}
    if previous_run:
        overrides.update(
            {"model.adapter": f"runs:/{previous_run}/{t.ADAPTER_ARTIFACT}", "model.adapter_init": stage.init}
        )
    overrides.update(stage.overrides)
    return base.with_overrides(overrides, f"pipeline.stages[{index}]")


class Pipeline:
    def __init__(
        self,
        spec: Spec,
        tracker: Tracker,
        from_stage: Optional[int] = None,
        baseline: bool = False,
        echo: Callable[[str], None] = print,
    ):
        """`from_stage` None reuses every finished twin; K reruns stage K and everything after it."""
        if spec.pipeline is None:
            raise SpecError(spec.source, [("pipeline", "missing: `stages` needs a `pipeline:` section with stages")])
        if from_stage is not None and not 1 <= from_stage <= len(spec.pipeline.stages):
            raise SpecError(
                spec.source, [("--from-stage", f"must be 1..{len(spec.pipeline.stages)} (got {from_stage})")]
            )
        self.spec, self.tracker, self.from_stage, self.with_baseline, self.echo = (
            spec,
            tracker,
            from_stage,
            baseline,
            echo,
        )
        self.name = spec.pipeline.name or f"{spec.tracking.experiment}-pipeline"
        self.metric = spec.tracking.metric

    def _finished_twin(self, spec: Spec) -> Optional[t.RunRecord]:
        twins = [
            r
            for r in self.tracker.find_runs(
                spec.tracking.experiment,
                {t.TAG_KIND: t.KIND_STAGE, t.TAG_SPEC_HASH: spec.spec_hash(), t.TAG_OUTCOME: Outcome.OK},
            )
            if r.status == "FINISHED"
        ]
        return twins[-1] if twins else None

    def run(self) -> PipelineOutcome:
        tags = {
            t.TAG_KIND: t.KIND_PIPELINE,
            t.TAG_NAME: self.name,
            t.TAG_METRIC: self.metric,
            t.TAG_DIRECTION: self.spec.tracking.direction,
        }
        with self.tracker.run(self.spec.tracking.experiment, run_name=self.name, tags=tags) as run:
            outcome = PipelineOutcome(run_id=run.run_id, stages=[])
            previous: Optional[str] = None
            for i, stage in enumerate(self.spec.pipeline.stages):  # type: ignore[union-attr]
                done = self._stage(i, stage.name, previous, run.run_id)
                outcome.stages.append(done)
                previous = done.run_id
            if self.with_baseline:
                outcome.baseline = self._baseline(run.run_id)
            self._report(run, outcome)
        return outcome

    def _stage(self, index: int, name: str, previous: Optional[str], pipeline_run: str) -> StageOutcome:
        spec = stage_spec(self.spec, index, previous)
        reusable = self.from_stage is None or index + 1 < self.from_stage
        twin = self._finished_twin(spec) if reusable else None
        if twin is not None:
            self.echo(f"stage {index + 1} {name}: reusing finished run {twin.run_id}")
            return StageOutcome(name, twin.run_id, True, twin.metrics.get(self.metric), twin.metrics)
        self.echo(f"stage {index + 1} {name}: training")
        run_id, result = run_training(
            spec,
            self.tracker,
            kind=t.KIND_STAGE,
            parent_run_id=pipeline_run,
            based_on=previous,
            extra_tags={t.TAG_STAGE: name, t.TAG_STAGE_INDEX: index + 1},
        )
        if result.outcome != Outcome.OK:
            raise TrainingFailed(
                f"pipeline.stages[{index}]: stage {name} ended {result.outcome}: {result.reason}; "
                f"later stages not run (run {run_id})"
            )
        return StageOutcome(name, run_id, False, result.metrics.get(self.metric), result.metrics)

    def total_steps(self) -> int:
        steps = 0
        for i in range(len(self.spec.pipeline.stages)):  # type: ignore[union-attr]
            spec = stage_spec(self.spec, i, None)
            steps += plan_for(spec).total_steps
        return steps

    def _baseline(self, pipeline_run: str) -> StageOutcome:
        """The control: one stage, the last stage's data, as many steps as the whole pipeline."""
        stages = self.spec.pipeline.stages  # type: ignore[union-attr]
        last = stage_spec(self.spec, len(stages) - 1, None)
        steps = self.total_steps()
        spec = last.with_overrides({"train.max_steps": steps, "tracking.run_name": f"baseline-{stages[-1].name}"})
        self.echo(f"baseline: one stage of {steps} steps on {stages[-1].name}")
        run_id, result = run_training(
            spec, self.tracker, kind=t.KIND_TRAIN, parent_run_id=pipeline_run, extra_tags={t.TAG_PHASE: "baseline"}
        )
        return StageOutcome(
            spec.tracking.run_name or "baseline", run_id, False, result.metrics.get(self.metric), result.metrics
        )

    def _stage_table(self, outcome: PipelineOutcome, names: list[str]) -> str:
        """The pipeline run's note in the MLflow UI: each stage's headline and its loss on every stage's
        held-out set (forgetting reads down a column), with the run."""
        head = f"| stage | {self.metric} | " + " | ".join(f"eval/{n}/loss" for n in names) + " | run |"
        rows = [head, "|" + " --- |" * (len(names) + 3)]
        for s in [*outcome.stages, *([outcome.baseline] if outcome.baseline else [])]:
            cells = [f"{v:.4g}" if (v := s.metrics.get(f"eval/{n}/loss")) is not None else "" for n in names]
            result = f"{s.result:.4g}" if s.result is not None else "n/a"
            rows.append(
                f"| {s.name}{' (reused)' if s.reused else ''} | {result} | " + " | ".join(cells) + f" | `{s.run_id}` |"
            )
        return "\n".join(rows)

    def _report(self, run: t.RunLogger, outcome: PipelineOutcome) -> None:
        """Per-stage results, the forgetting table, and staged vs baseline: whichever wins, as measured."""
        names = [s.name for s in outcome.stages]
        table = {s.name: {n: s.metrics.get(f"eval/{n}/loss") for n in names} for s in outcome.stages}
        run.log_text(json.dumps(table, indent=2), "stage_evals.json")
        metrics = {f"pipeline/{s.name}/{self.metric}": s.result for s in outcome.stages if s.result is not None}
        last = outcome.stages[-1]
        lines = [f"Stages: {' -> '.join(names)}."]
        if last.result is not None:
            metrics["pipeline/final"] = last.result
        if outcome.baseline and outcome.baseline.result is not None and last.result is not None:
            b = outcome.baseline.result
            metrics["pipeline/baseline"] = b
            lower = "staged" if last.result < b else "single-stage baseline"
            lines.append(
                f"{self.metric} on {last.name}: staged {last.result:.4f}, single-stage baseline of the same "
                f"steps {b:.4f}; lower: {lower} (by {abs(last.result - b):.4f})."
            )
        run.log_metrics(metrics)
        outcome.verdict = " ".join(lines)
        run.set_tags(
            {
                t.TAG_NOTE: outcome.verdict + "\n\n" + self._stage_table(outcome, names),
                t.TAG_REUSED_STAGES: ",".join(s.name for s in outcome.stages if s.reused) or None,
            }
        )
