"""`model.adapter` references: a local folder, or `runs:/RUN/adapter` fetched from the store with
that run's logged spec (what the adapter was trained on top of). Stages chain through these,
and `load_model` uses the same path, so what loads is what trained."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from ..errors import SpecError
from ..spec import is_uri, validate
from ..tracking import (
    ADAPTER_ARTIFACT,
    SPEC_ARTIFACT,
    checkpoint_adapter,
    download_artifacts,
    model_adapter,
    newest_checkpoint_model,
    run_adapter_folder,
    run_model_id,
    tracking_uri,
)
from ..trainers.registry import capabilities
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
            local = _plain_adapter(run_id, path, folder)
        try:
            spec_file = download_artifacts(run_id, SPEC_ARTIFACT, str(folder))
        except Exception:  # noqa: BLE001 (another tool's run has no spec.yaml: its adapter names its base)
            _FETCHED[ref] = (Path(local), spec_from_adapter(Path(local), f"{ref} (its adapter's config)"))
            return _FETCHED[ref]
        raw = read_yaml(spec_file)  # the spec reader's size and alias-bomb limits: a store may be shared
        _FETCHED[ref] = (
            Path(local),
            validate(raw, f"{ref} (spec of run {run_id})", str(Path.cwd()), check_files=False),
        )
    return _FETCHED[ref]


def _plain_adapter(run_id: str, path: str, folder: Path) -> str:
    """A run's adapter kept as files: `adapter/`, the weights a command trainer kept in `outputs/`, else the
    newest checkpoint transformers' MLflowCallback logged (`HF_MLFLOW_LOG_ARTIFACTS=1`)."""
    if (path or ADAPTER_ARTIFACT) != ADAPTER_ARTIFACT:
        return download_artifacts(run_id, path, str(folder))
    kept = run_adapter_folder(run_id)
    if kept is None and (checkpoint := newest_checkpoint_model(run_id)):
        found = checkpoint_adapter(checkpoint, folder / "checkpoint", tracking_uri(create=False))
        if found is not None:
            return str(found)
    return download_artifacts(run_id, kept or ADAPTER_ARTIFACT, str(folder))


def spec_from_adapter(adapter_dir: Path, source: str) -> Any:
    """A spec to load an adapter with where its run logged none (another tool's run): its base model."""
    base = adapter_base(adapter_dir)
    if base is None:
        raise SpecError(source, [("model.name", "the adapter's config names no base model to load it on")])
    raw = {"model": {"name": base}, "data": {"train": "unknown"}, "trainer": {"type": "command", "argv": ["true"]}}
    return validate(raw, source, str(Path.cwd()), check_files=False)


def adapter_base(adapter_dir: Path) -> Optional[str]:
    """The base model a peft adapter names (`adapter_config.json`'s `base_model_name_or_path`)."""
    config = Path(adapter_dir) / "adapter_config.json"
    try:
        base = json.loads(config.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return base if isinstance(base, str) and base else None


def spec_for_adapter(spec: Any, adapter_dir: Path) -> Any:
    """The spec to load a run's adapter with. A script's run (a command trainer) records `model.name` as a
    label, not what its script loaded; the adapter's own config names the base it was trained on."""
    if capabilities(spec.trainer.type).loads_spec_model:
        return spec
    base = adapter_base(adapter_dir)
    if base is None:
        return spec
    return spec.with_overrides({"model.name": base, "model.tiny": None, "model.gguf_file": None}, "the adapter's base")
