"""The tracking contract: what writers put into MLflow, so that readers can rely on it.

Every tag, outcome, run kind and artifact name tunelog writes is named here, once; the
changelog, promote, gc and the MLflow UI read them back. A run logged by hand with the
same tags works as well as one tunelog started. Documented in docs/tracking-contract.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Optional, TypeVar

from ..vocabulary import Direction, Outcome

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
OUTCOMES = tuple(Outcome)  # every value tunelog.outcome may hold, the sweep-only ones included
TAG_EVAL_KEY = "tunelog.eval_key"  # what the headline was measured on (a hash of data.eval): only equal keys compare
TAG_GPUS = "tunelog.gpus"  # GPUs the run trained on (0: the CPU); with its wall time, the run's device-hours
TAG_STUDY = "tunelog.study"  # sweep trials and the sweep run: the Optuna study's name
TAG_TRIAL = "tunelog.trial"  # the trial's number in its study
TAG_BEST = "tunelog.best"  # "true" on the best trial's run
TAG_MODEL_ID = "tunelog.model_id"  # the run's trained adapter as an MLflow LoggedModel (models:/<id>)
SPEC_ARTIFACT = "spec.yaml"
ADAPTER_ARTIFACT = "adapter"
OUTPUTS_ARTIFACT = "outputs"  # the files a command trainer's trainer.artifacts names
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
        "trainer.rendered_argv",  # the command the spec rendered: it says nothing the spec's fields do not
    }
)
TAG_OWNER = "tunelog.owner"  # host:pid of the process that opened the run (`tunelog gc` checks it)
TAG_IMPORT_KEY = "tunelog.import_key"  # identifies an imported legacy folder, so importing twice adds nothing
TAG_IMPORT_READERS = "tunelog.import_readers"  # the readers that understood the folder (kohya,tensorboard)
# params that name the run rather than what it did (output paths, run names, seeds-as-ids), comma-joined:
# recorded, but left out of "what changed", repeats, change sets and effects
TAG_IDENTITY_KEYS = "tunelog.identity_keys"
TAG_PROJECT = "tunelog.project"  # imported runs: the project folder they came from (lineage stays inside it)
TAG_TIME_SOURCE = "tunelog.time_source"  # imported runs: where the start and end times came from
TAG_CHECKPOINTS = "tunelog.checkpoints"  # imported runs: the checkpoint folders (or saved LoRAs) found, in order
TAG_SOURCE = "tunelog.source"  # imported runs: the folder they were read from
TAG_TRAINER = "tunelog.trainer"  # who trained when it was not tunelog's own loop ("hf-callback")
TAG_REPRODUCES = "tunelog.reproduces"  # `tunelog reproduce`: the run this one reruns
TAG_STAGE = "tunelog.stage"  # pipeline stages: the stage's name...
TAG_STAGE_INDEX = "tunelog.stage_index"  # ...and its 1-based position
TAG_REUSED_STAGES = "tunelog.reused_stages"  # the pipeline run: stages taken from finished twins, not trained
TAG_BEST_TRIAL = "tunelog.best_trial"  # the sweep run: its best trial's number...
TAG_BEST_RUN_ID = "tunelog.best_run_id"  # ...and that trial's run
TAG_STORAGE = "tunelog.storage"  # the sweep run: the study storage (credentials redacted)
TAG_REFINED_FROM = "tunelog.refined_from"  # the sweep run: the study `--refine-from` narrowed the space from
# in memory only, never written: how `dialects.understand` read a run another tool logged (its headline's why)
TAG_WARNING = (
    "tunelog.warning"  # bookkeeping that failed on a run that trained (its datasets not recorded): never its outcome
)
TAG_READ_AS = "tunelog.read_as"
TAG_N_TRIALS = "tunelog.n_trials"  # the sweep run: its trial budget (a tag: a resumed sweep may get another)

# --- run kinds (tag tunelog.kind) ---------------------------------------------------
KIND_TRAIN = "train"  # one fine-tune (`tunelog train`, `reproduce`)
KIND_TRIAL = "trial"  # a sweep trial, child of its sweep run
KIND_SWEEP = "sweep"  # the study's parent run
KIND_PROBE = "probe"  # the probe's parent run and each measured candidate (its children)
KIND_STAGE = "stage"  # one stage of a pipeline (and the baseline), child of the pipeline run
KIND_PIPELINE = "pipeline"  # the stages' parent run
KIND_IMPORT = "import"  # a legacy folder turned into a run
KIND_CHANGELOG = "changelog"  # the changelog written as an artifact
KIND_GROUP = "group"  # read only (never written): a run of another tool that holds nested runs and trained nothing
KINDS = (
    KIND_TRAIN,
    KIND_TRIAL,
    KIND_SWEEP,
    KIND_PROBE,
    KIND_STAGE,
    KIND_PIPELINE,
    KIND_IMPORT,
    KIND_CHANGELOG,
    KIND_GROUP,
)
ADAPTER_KINDS = (KIND_TRAIN, KIND_STAGE, KIND_TRIAL)  # runs that save an adapter: what promote may register

MINIMIZE, MAXIMIZE = Direction.MINIMIZE, Direction.MAXIMIZE

# The headline value once more under one name for every kind of run, oriented so lower is better
# (a maximized metric is negated): one column in the MLflow UI that sorts trials, stages and imports alike.
SCORE_METRIC = "tunelog/score"


def score(value: float, direction: str) -> float:
    return Direction.of(direction).score(value)


def better(a: float, b: float, direction: str) -> bool:
    """True when `a` is strictly better than `b` (see `Direction.better`)."""
    return Direction.of(direction).better(a, b)


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
    """The item whose `value(item)` is best (finite values only; ties: the first given)."""
    return Direction.of(direction).best(items, value)


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
        """The params that say what the run did: without derived ones and the run's identity keys. Computed
        once per record (a Trainer run logs some 200 params; a changelog asks each run many times)."""
        cached = self.__dict__.get("_compared")
        if cached is None:
            identity = self.tags.get(TAG_IDENTITY_KEYS)
            skip = DERIVED_PARAMS.union(identity.split(",")) if identity else DERIVED_PARAMS
            cached = {k: v for k, v in self.params.items() if k not in skip}
            object.__setattr__(self, "_compared", cached)  # a derived value: the record itself stays as read
        return cached

    @property
    def kind(self) -> str:
        return self.tags.get(TAG_KIND, "")

    @property
    def metric(self) -> str:
        """The run's headline metric's name (tag tunelog.metric)."""
        return self.tags.get(TAG_METRIC, "eval/loss")

    @property
    def direction(self) -> Direction:
        return Direction.of(self.tags.get(TAG_DIRECTION))
