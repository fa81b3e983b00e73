"""`reproduce`: rerun a run from the spec it logged and compare the final metrics."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from . import tracking as t
from .spec import validate
from .tracking import Tracker
from .train import run_training


def reproduce(tracker: Tracker, run_id: str) -> tuple[str, dict[str, tuple[float, float]]]:
    """Returns the new run's id and {metric: (original, reproduced)} for the metrics both have."""
    original = tracker.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="tunelog-reproduce-") as folder:
        spec_file = tracker.download(run_id, t.SPEC_ARTIFACT, folder)
        spec = validate(yaml.safe_load(Path(spec_file).read_text()), f"spec of run {run_id}", folder)
    spec = spec.with_overrides({"tracking.run_name": f"reproduce-{original.name}"})
    new_id, result = run_training(
        spec, tracker, kind=original.kind or t.KIND_TRAIN, based_on=run_id, extra_tags={"tunelog.reproduces": run_id}
    )
    shared = sorted(set(original.metrics) & set(result.metrics))
    return new_id, {k: (original.metrics[k], result.metrics[k]) for k in shared}
