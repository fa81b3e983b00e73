"""`reproduce`: rerun a run from the spec it logged and compare the final metrics."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

from . import tracking as t
from .errors import TunelogError
from .spec import validate
from .tracking import Tracker
from .train import DATA_MANIFEST, run_training
from .training.provenance import missing_data, relocated
from .util.safe_yaml import read_yaml


def _recorded_data(tracker: Tracker, run_id: str, folder: str) -> dict:
    """The run's data manifest; an empty one for runs logged before it existed."""
    try:
        return json.loads(Path(tracker.download(run_id, DATA_MANIFEST, folder)).read_text())
    except Exception:  # noqa: BLE001 (MLflow's error for a missing artifact differs by store)
        return {}


def reproduce(
    tracker: Tracker, run_id: str, overrides: Optional[dict] = None
) -> tuple[str, dict[str, tuple[float, float]]]:
    """Returns the new run's id and {metric: (original, reproduced)} for the metrics both have."""
    original = tracker.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="tunelog-reproduce-") as folder:
        spec_file = tracker.download(run_id, t.SPEC_ARTIFACT, folder)
        spec = validate(read_yaml(spec_file), f"spec of run {run_id}", str(Path.cwd()), check_files=False)
        recorded = _recorded_data(tracker, run_id, folder)
    found = relocated(spec, recorded)
    spec = spec.with_overrides({"tracking.run_name": f"reproduce-{original.name}", **found, **(overrides or {})})
    problems = missing_data(spec, recorded)
    if problems:
        raise TunelogError(
            f"run {run_id} cannot be reproduced here; its data:\n  "
            + "\n  ".join(problems)
            + "\naccepted: the same files at those paths, or --set FIELD=PATH to where they are on this machine"
        )
    new_id, result = run_training(
        spec, tracker, kind=original.kind or t.KIND_TRAIN, based_on=run_id, extra_tags={t.TAG_REPRODUCES: run_id}
    )
    shared = sorted(set(original.metrics) & set(result.metrics))
    return new_id, {k: (original.metrics[k], result.metrics[k]) for k in shared}
