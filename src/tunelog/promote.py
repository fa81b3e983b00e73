"""`promote`: the best run's adapter registered in the MLflow Model Registry.

The `champion` alias moves only to a version that beats the current champion by the
spec's metric; anything else is registered and tagged `challenger`. Promoting the same run
twice creates no second version. `load_model` turns `models:/NAME@champion` back into a
model ready to evaluate or generate.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Optional

from . import tracking as t
from .errors import TunelogError
from .tracking import RunRecord, Tracker
from .vocabulary import Outcome, spelled_as


@dataclass
class Promotion:
    model: str
    version: str
    run_id: str
    value: float
    created: bool
    champion: bool
    previous: Optional[str]  # the champion's version before, if any
    comparable: bool = True  # False: the champion was scored on another eval set

    def summary(self) -> str:
        if not self.created:
            return f"run {self.run_id} is already {self.model} version {self.version}; nothing registered"
        if self.champion:
            role = "champion"
        elif not self.comparable:
            role = "challenger (not comparable: the champion was scored on another eval set; move it by hand)"
        else:
            role = "challenger (the champion stays better)"
        return f"registered {self.model} version {self.version} from run {self.run_id} ({self.value:.4g}) as {role}"


def best_run(
    tracker: Tracker, experiment: str, metric: Optional[str] = None, runs: Optional[list[RunRecord]] = None
) -> RunRecord:
    """The best FINISHED run with outcome ok, by its headline metric, among runs with an adapter scored
    on the eval set most of them used (a number on another eval set is not better, only different).
    `runs`: the experiment's runs when already read (over REST a read of 10,000 runs takes seconds)."""
    runs = [
        r
        for r in (tracker.all_runs(experiment) if runs is None else runs)
        if r.status == "FINISHED" and r.kind in t.ADAPTER_KINDS and r.tags.get(t.TAG_OUTCOME) == Outcome.OK
    ]
    main = t.main_eval_key([r.tags.get(t.TAG_EVAL_KEY) for r in runs])
    # earliest first: of equal results the first run wins, as a sweep's own pick is its lowest trial number
    runs = sorted((r for r in runs if r.tags.get(t.TAG_EVAL_KEY) == main), key=lambda r: r.start_ms)
    direction = runs[0].direction if runs else t.MINIMIZE
    best = t.best_of(runs, lambda r: r.metrics.get(spelled_as(metric or r.metric, r.metrics)), direction)
    if best is None:
        raise TunelogError(f"experiment {experiment!r} has no finished run with outcome ok and a result to promote")
    return best


def _description(tracker: Tracker, run: RunRecord, runs: Optional[list[RunRecord]] = None) -> str:
    """The run's changelog entry, as the version's description."""
    from .changelog import build
    from .changelog.render import entry_markdown

    log = build(tracker.all_runs(run.experiment_name) if runs is None else runs, run.experiment_name)
    return entry_markdown(log, log.entry(run.run_id))


def promote(
    tracker: Tracker,
    run: RunRecord,
    model: str,
    metric: Optional[str] = None,
    runs: Optional[list[RunRecord]] = None,
) -> Promotion:
    """Register `run`'s adapter as a version of `model` (its changelog entry as the description, from `runs`
    when the caller has read its experiment already); it becomes the champion only if it beats the current
    one on the same eval set."""
    metric = spelled_as(metric or run.metric, run.metrics)
    direction = run.direction
    value = run.metrics.get(metric)
    if value is None or not math.isfinite(value):
        raise TunelogError(f"run {run.run_id} has no finite {metric!r} to promote on")
    champion = tracker.version_by_alias(model, "champion")
    existing = tracker.registered_version_of(model, run.run_id)
    if existing is None and not tracker.has_adapter(run.run_id):  # a version must point at something that loads
        raise TunelogError(
            f"run {run.run_id} ({run.name}) kept no adapter (no MLflow model, no weights under `adapter/` or "
            f"`outputs/`): nothing to register. A command trainer logs the files trainer.artifacts names from the "
            f"script's {{output_dir}} (default: *.safetensors, adapter_config.json)"
        )
    if existing is not None:
        return Promotion(
            model,
            existing.version,
            run.run_id,
            value,
            False,
            champion is not None and champion.version == existing.version,
            champion.version if champion else None,
        )
    if not run.tags.get(t.TAG_MODEL_ID):  # a run with files only: its MLflow model made here
        _as_mlflow_model(tracker, run)
    tags = {
        "metric": metric,
        "metric_value": repr(value),
        "direction": direction,
        "run_id": run.run_id,
        "base_model": run.params.get("model.name")
        if run.params.get("model.name") not in (None, "None")
        else f"tiny:{run.tags.get(t.TAG_SPEC_HASH, '')}",
        "spec_hash": run.tags.get(t.TAG_SPEC_HASH),
        "eval_key": run.tags.get(t.TAG_EVAL_KEY),
    }
    comparable = champion is None or (champion.tags.get("eval_key") or None) == tags["eval_key"]
    version = tracker.register_adapter(model, run.run_id, tags, _description(tracker, run, runs))
    wins = champion is None or (
        comparable and t.better(value, float(champion.tags.get("metric_value", "nan")), direction)
    )
    if wins:
        tracker.set_alias(model, "champion", version.version)
    else:
        tracker.tag_version(model, version.version, "challenger", "true")
    previous = champion.version if champion else None
    return Promotion(model, version.version, run.run_id, value, True, wins, previous, comparable)


def _as_mlflow_model(tracker: Tracker, run: RunRecord) -> None:
    """A run that kept its adapter as files (a command trainer's `outputs/`, an older run's `adapter/`) gets
    the MLflow model tunelog's own runs log, so `mlflow.pyfunc.load_model` and `mlflow models serve` open
    the version too; where its base model does not load on this machine, the version stays the files (said)."""
    from .tracking.models import log_adapter_model

    try:
        loaded = load_model(f"runs:/{run.run_id}/{t.ADAPTER_ARTIFACT}")
        base = loaded.model.peft_config["default"].base_model_name_or_path
        if not base:  # a model built from a config: no base to reference, the flavor would store it whole
            return
        history = tracker.client.get_metric_history(run.run_id, run.metric)
        step = max((m.step for m in history), default=0)
        log_adapter_model(tracker.client, run.run_id, loaded.model, loaded.tokenizer, base, step)
    except Exception as exc:  # noqa: BLE001 (the files still register; only the MLflow model is missing)
        said = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        print(
            f"promote: run {run.run_id}'s adapter registered as files, not an MLflow model: {said}",
            file=sys.stderr,
        )


def load_model(uri: str, device=None):
    """`models:/NAME@champion` (or `/VERSION`, or `runs:/RUN/adapter`) -> LoadedModel: the base model
    with the adapter applied (and any merged earlier stages), in eval mode, plus its tokenizer."""
    from .training.adapters import adapter_resolver, fetch_run_adapter, spec_for_adapter
    from .training.model import LoadedModel, load_tokenizer, pick_device, with_trained_adapter

    ref = t.resolve_model_uri(uri) if uri.startswith("models:/") else uri
    adapter_dir, spec = fetch_run_adapter(ref)
    spec = spec_for_adapter(spec, adapter_dir)
    device = device or pick_device()
    tokenizer = load_tokenizer(spec, saved=adapter_dir)  # the run's own copy: no path of the training machine
    model = with_trained_adapter(spec, adapter_dir, tokenizer, device, adapter_resolver(spec))
    return LoadedModel(model=model, tokenizer=tokenizer, device=device)
