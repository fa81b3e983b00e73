"""The tracking contract: what writers put into MLflow, so that readers can rely on it.

Every tag, outcome, run kind and artifact name tunelog writes is named here, once; the
changelog, promote, gc and the MLflow UI read them back. A run logged by hand with the
same tags works as well as one tunelog started. Documented in docs/tracking-contract.md.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Optional, TypeVar

TAG_KIND = "tunelog.kind"  # train, trial, sweep, probe, stage, pipeline, import
TAG_BASED_ON = "tunelog.based_on"  # run id this run derives from
TAG_PHASE = "tunelog.phase"
TAG_NAME = "tunelog.name"  # human name
TAG_CONFIG = "tunelog.config"  # the named preset applied, if any
TAG_OUTCOME = "tunelog.outcome"  # ok, oom, diverged, rejected, failed, pruned, incomplete
TAG_REASON = "tunelog.reason"
TAG_SPEC_HASH = "tunelog.spec_hash"
TAG_SPEC_FILE = "tunelog.spec_file"
TAG_LINT = "tunelog.lint"  # ids of the lint warnings the run started with
TAG_METRIC = "tunelog.metric"  # the headline metric's name...
TAG_DIRECTION = "tunelog.direction"  # ...and whether lower or higher is better
TAG_NOTE = "mlflow.note.content"  # shown by the MLflow UI
TAG_PARENT = "mlflow.parentRunId"
# on experiments: the MLflow UI (3.x) opens a "finetuning" experiment in its model-training view (runs
# table, charts) rather than the GenAI one (traces), which says nothing about fine-tunes
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
TAG_RUN_NAME = "mlflow.runName"
OUTCOMES = ("ok", "oom", "diverged", "rejected", "failed", "pruned", "incomplete")
TAG_EVAL_KEY = "tunelog.eval_key"  # what the headline was measured on (a hash of data.eval): only equal keys compare
TAG_GPUS = "tunelog.gpus"  # GPUs the run trained on (0: the CPU); with its wall time, the run's device-hours
TAG_STUDY = "tunelog.study"  # sweep trials and the sweep run: the Optuna study's name
TAG_TRIAL = "tunelog.trial"  # the trial's number in its study
TAG_BEST = "tunelog.best"  # "true" on the best trial's run
TAG_MODEL_ID = "tunelog.model_id"  # the run's trained adapter as an MLflow LoggedModel (models:/<id>)
SPEC_ARTIFACT = "spec.yaml"
ADAPTER_ARTIFACT = "adapter"
PLOTS_ARTIFACT = "plots"

# Params the trainer adds that follow from the config (or the machine): readers leave them
# out of "what changed" between runs.
DERIVED_PARAMS = frozenset(
    {
        "data.n_train",
        "data.n_eval",
        "train.total_steps",
        "train.warmup_steps_resolved",
        "train.peak_lr_resolved",
        "train.device",
    }
)
TAG_OWNER = "tunelog.owner"  # host:pid of the process that opened the run (`tunelog gc` checks it)
TAG_IMPORT_KEY = "tunelog.import_key"  # identifies an imported legacy folder, so importing twice adds nothing
TAG_IMPORT_READERS = "tunelog.import_readers"  # the readers that understood the folder (kohya,tensorboard)
# params that name the run rather than what it did (output paths, run names, seeds-as-ids), comma-joined:
# recorded, but left out of "what changed", repeats, change sets and effects
TAG_IDENTITY_KEYS = "tunelog.identity_keys"

# --- run kinds (tag tunelog.kind) ---------------------------------------------------
KIND_TRAIN = "train"  # one fine-tune (`tunelog train`, `reproduce`)
KIND_TRIAL = "trial"  # a sweep trial, child of its sweep run
KIND_SWEEP = "sweep"  # the study's parent run
KIND_PROBE = "probe"  # the probe's parent run and each measured candidate (its children)
KIND_STAGE = "stage"  # one stage of a pipeline (and the baseline), child of the pipeline run
KIND_PIPELINE = "pipeline"  # the stages' parent run
KIND_IMPORT = "import"  # a legacy folder turned into a run
KIND_CHANGELOG = "changelog"  # the changelog written as an artifact
KINDS = (KIND_TRAIN, KIND_TRIAL, KIND_SWEEP, KIND_PROBE, KIND_STAGE, KIND_PIPELINE, KIND_IMPORT, KIND_CHANGELOG)
ADAPTER_KINDS = (KIND_TRAIN, KIND_STAGE, KIND_TRIAL)  # runs that save an adapter: what promote may register

MINIMIZE, MAXIMIZE = "minimize", "maximize"

# The headline value once more under one name for every kind of run, oriented so lower is better
# (a maximized metric is negated): one column in the MLflow UI that sorts trials, stages and imports alike.
SCORE_METRIC = "tunelog/score"


def score(value: float, direction: str) -> float:
    return -value if direction == MAXIMIZE else value


def better(a: float, b: float, direction: str) -> bool:
    """True when `a` is strictly better than `b`; a NaN is never better, and anything beats a NaN."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if direction == MAXIMIZE else a < b


T = TypeVar("T")


def main_eval_key(keys: Sequence[Optional[str]]) -> Optional[str]:
    """The eval key most of these results carry (given oldest first; ties: the most recent one's): the set
    "best" is judged on, since results on different eval sets do not compare."""
    counts = Counter(keys)
    if not counts:
        return None
    top = max(counts.values())
    return next(k for k in reversed(keys) if counts[k] == top)


def best_of(items: Iterable[T], value, direction: str) -> Optional[T]:
    """The item whose `value(item)` is best (finite values only; None values skipped); None when none."""
    best, best_value = None, math.nan
    for item in items:
        v = value(item)
        if v is None or not math.isfinite(v):
            continue
        if best is None or better(v, best_value, direction):
            best, best_value = item, v
    return best


@dataclass(frozen=True)
class RunRecord:
    """One run as readers see it: plain data, no MLflow objects."""

    run_id: str
    name: str
    status: str
    start_ms: int
    end_ms: Optional[int]
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    experiment_id: str = ""
    experiment_name: str = ""

    @property
    def compared_params(self) -> dict[str, str]:
        """The params that say what the run did: without derived ones and the run's identity keys."""
        identity = self.tags.get(TAG_IDENTITY_KEYS)
        skip = DERIVED_PARAMS.union(identity.split(",")) if identity else DERIVED_PARAMS
        return {k: v for k, v in self.params.items() if k not in skip}

    @property
    def kind(self) -> str:
        return self.tags.get(TAG_KIND, "")

    @property
    def metric(self) -> str:
        """The run's headline metric's name (tag tunelog.metric)."""
        return self.tags.get(TAG_METRIC, "eval/loss")

    @property
    def direction(self) -> str:
        return self.tags.get(TAG_DIRECTION, MINIMIZE)
