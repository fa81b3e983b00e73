"""`model.adapter` references: a local folder, or `runs:/RUN/adapter` fetched from the store with
that run's logged spec (what the adapter was trained on top of). Stages chain through these,
and `load_model` uses the same path, so what loads is what trained."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..spec import is_uri, validate
from ..tracking import ADAPTER_ARTIFACT, SPEC_ARTIFACT, download_artifacts, model_adapter, run_model_id, tracking_uri
from ..util.safe_yaml import read_yaml

_FETCHED: dict[str, tuple[Path, Any]] = {}


def adapter_resolver(spec) -> Callable[[str], tuple[Path, Any]]:
    """Resolves `model.adapter`: a folder as is; `runs:/RUN/adapter` downloaded with that run's spec.

    Downloads are cached per process, so a chain of stages fetches each adapter once.
    """

    def resolve(ref: str) -> tuple[Path, Any]:
        if not is_uri(ref):
            return spec.path(ref), None
        if not ref.startswith("runs:/"):
            raise SpecError(spec.source, [("model.adapter", f"{ref}: accepted: a folder or runs:/RUN_ID/adapter")])
        return fetch_run_adapter(ref)

    return resolve


def fetch_run_adapter(ref: str) -> tuple[Path, Any]:
    """`runs:/RUN/adapter` -> (local adapter folder, the Spec that run logged); cached for this process.
    The folder comes from the run's MLflow model where it has one (`tunelog.model_id`), else `adapter/`."""
    if ref not in _FETCHED:
        run_id, _, path = ref[len("runs:/") :].partition("/")
        folder = Path(tempfile.mkdtemp(prefix="tunelog-adapter-"))
        atexit.register(shutil.rmtree, folder, True)  # cached for this process, gone with it
        model_id = run_model_id(run_id) if (path or ADAPTER_ARTIFACT) == ADAPTER_ARTIFACT else None
        if model_id:  # the adapter lives in the run's MLflow model (tracking.models), stored once
            local = str(model_adapter(model_id, folder / "model", tracking_uri(create=False)))
        else:
            local = download_artifacts(run_id, path or ADAPTER_ARTIFACT, str(folder))
        spec_file = download_artifacts(run_id, SPEC_ARTIFACT, str(folder))
        raw = read_yaml(spec_file)  # the spec reader's size and alias-bomb limits: a store may be shared
        _FETCHED[ref] = (
            Path(local),
            validate(raw, f"{ref} (spec of run {run_id})", str(Path.cwd()), check_files=False),
        )
    return _FETCHED[ref]
