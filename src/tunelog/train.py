"""`train`: one fine-tune from a spec, recorded as one MLflow run under the tracking contract.

Stages and sweeps call `run_training` too, with their own kind, parent and lineage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import yaml

from . import tracking as t
from .spec import Spec
from .tracking import TAG_LINT, RunLogger, Tracker
from .trainers import EvalHook, Result, get_trainer
from .trainers.registry import capabilities
from .trainers.script import SCRIPT_DECIDES
from .training.provenance import dataset_inputs, eval_key, manifest

if TYPE_CHECKING:
    from .lint import LintReport


def run_tags(spec: Spec, kind: str, based_on: Optional[str] = None, extra: Optional[dict] = None) -> dict:
    """The `tunelog.*` tags every run starts with."""
    tags = {
        t.TAG_KIND: kind,
        t.TAG_NAME: spec.tracking.run_name or spec.config_name or "train",
        t.TAG_CONFIG: spec.config_name,
        t.TAG_BASED_ON: based_on,
        t.TAG_SPEC_HASH: spec.spec_hash(),
        t.TAG_SPEC_FILE: spec.source,
        t.TAG_METRIC: spec.tracking.metric,
        t.TAG_DIRECTION: spec.tracking.direction,
        t.TAG_NOTE: spec.note(),
        t.TAG_EVAL_KEY: eval_key(spec),
        **spec.tracking.tags,
        **(extra or {}),
    }
    return {k: v for k, v in tags.items() if v is not None}


DATA_MANIFEST = "data_manifest.json"  # the data files a run read: path, size, sha256 (see data.manifest)


def record_spec(spec: Spec, run: RunLogger) -> None:
    """The resolved config as params (dotted names) and the whole resolved spec as an artifact."""
    params = spec.flat_params()
    if not capabilities(spec.trainer.type).in_process:
        params = {k: v for k, v in params.items() if not k.startswith(SCRIPT_DECIDES)}
    run.later(params=params)  # with the trainer's first write: see run_training
    # libyaml's emitter where present: the pure-Python one was a tenth of a cheap sweep trial's overhead
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    run.log_text(yaml.dump(spec.resolved(root=Path.cwd()), Dumper=dumper, sort_keys=False), t.SPEC_ARTIFACT)
    run.log_text(json.dumps(manifest(spec), indent=2), DATA_MANIFEST)


def lint_tags(spec: Spec, report: Optional["LintReport"]) -> dict:
    """Lint warnings recorded on the run: a tag listing their ids and a line in the note."""
    if report is None or not report.of("warning"):
        return {}
    note = "\n\n".join(part for part in (spec.note(), report.note_line()) if part)
    return {TAG_LINT: ", ".join(sorted({w.rule for w in report.of("warning")})), t.TAG_NOTE: note}


def run_training(
    spec: Spec,
    tracker: Tracker,
    kind: str = t.KIND_TRAIN,
    parent_run_id: Optional[str] = None,
    based_on: Optional[str] = None,
    extra_tags: Optional[dict] = None,
    lint: Optional["LintReport"] = None,
    on_start: Optional[Callable[[RunLogger], None]] = None,
    on_eval: Optional[EvalHook] = None,
) -> tuple[str, Result]:
    """Open a run, record the spec, train, record the outcome; returns (run_id, result).

    `on_start(run)` is called once the run exists (a sweep records it on the trial);
    `on_eval(step, loss)` sees every eval and may stop training (pruning).
    """
    # a name a person can read in the runs table (MLflow's own would be `secretive-wolf-944`)
    name = spec.tracking.run_name or spec.config_name or (spec.tracking.experiment if kind == t.KIND_TRAIN else None)
    tags = {**run_tags(spec, kind, based_on, extra_tags), **lint_tags(spec, lint)}
    with tracker.run(spec.tracking.experiment, run_name=name, tags=tags, parent_run_id=parent_run_id) as run:
        if on_start:
            on_start(run)
        record_spec(spec, run)
        run.log_datasets(dataset_inputs(spec))
        if capabilities(spec.trainer.type).in_process:
            run.flush()  # the spec's params in the store before training (a command trainer's first write takes them)
        with run.system_metrics(spec.tracking.system_metrics):
            result = get_trainer(spec.trainer.type).train(spec, run, on_eval=on_eval)
        headline = result.metrics.get(spec.tracking.metric)
        if headline is not None and math.isfinite(headline):
            run.log_metrics({t.SCORE_METRIC: t.score(headline, spec.tracking.direction)})
        run.set_outcome(result.outcome, result.reason)  # one write: the outcome and the metrics still buffered
        return run.run_id, result
