"""Trained adapters as MLflow models, and the data a run read as MLflow datasets.

- A trained adapter is logged through MLflow's transformers flavor as a LoggedModel of its run: the peft
  adapter and the tokenizer only, with the base as a reference (`base_model_path`: a local folder, or a
  hub id), a signature with generation params, linked to the metrics logged at its final step. So
  `mlflow.pyfunc.load_model("models:/NAME@champion")` and `mlflow models serve` work on what `promote`
  registered, and the experiment's Models tab lists every trained adapter. The run's tag
  `tunelog.model_id` names it; tunelog's own readers fetch the adapter from it (`model_adapter`), so
  each adapter is stored once. Runs without one (older runs, command trainers) keep `adapter/`.
- Datasets: the train and eval files as run inputs (context `train` / `eval`), the eval file's digest
  being the run's eval key, so the UI's Datasets column shows what the changelog means by
  "not comparable".
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from .contract import TAG_MODEL_ID

MODEL_NAME = "model"  # the LoggedModel's name within its run


def signature():
    """Text in, text out; `max_new_tokens` and `temperature` as params a caller may pass to predict."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema([ParamSpec("max_new_tokens", "long", 64), ParamSpec("temperature", "double", 1.0)]),
    )


def _requirements() -> list[str]:
    """Pinned from what is installed (MLflow's own inference imports torchvision, which a text model
    does not need and this environment may not have)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("mlflow", "torch", "transformers", "peft", "tokenizers", "safetensors", "accelerate"):
        try:
            out.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return out


def log_adapter_model(client: Any, run_id: str, model: Any, tokenizer: Any, base: str, step: int) -> str:
    """The peft `model` (adapter only; `base` its base model's folder or hub id) as a LoggedModel of the run,
    its metrics at `step` linked; returns the model id, also tagged on the run."""
    import mlflow

    run = client.get_run(run_id)
    # made here in the run's own experiment (the flavor would make it in the fluent API's current one)
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id, model_type="peft-adapter"
    )
    with fluent_uri(client.tracking_uri):  # the flavor writes through the fluent client
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name=MODEL_NAME,
            task="text-generation",
            base_model_path=base,
            step=step,
            signature=signature(),
            pip_requirements=_requirements(),
            run_id=run_id,
            model_id=logged.model_id,
        )
    client.set_tag(run_id, TAG_MODEL_ID, info.model_id)
    return info.model_id


@contextmanager
def fluent_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent tracking URI set for the body, then put back as it was: the module's value and the
    MLFLOW_TRACKING_URI variable (MLflow's own `_use_tracking_uri` unsets the variable on the way out,
    and every later `Tracker()` of the process would then miss its store)."""
    from mlflow.tracking._tracking_service import utils

    before, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    utils.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = before
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def model_adapter(model_id: str, dst: Path, tracking_uri: str) -> Path:
    """A LoggedModel's adapter as the folder tunelog's readers know (peft files and the tokenizer together)."""
    import mlflow

    with fluent_uri(tracking_uri):  # MLflow's models:/ repository looks the model up through the fluent URI
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{model_id}", dst_path=str(dst), tracking_uri=tracking_uri
            )
        )
    adapter = local / "peft"
    for file in (local / "components" / "tokenizer").glob("*"):
        shutil.copy2(file, adapter / file.name)
    return adapter


def log_datasets(client: Any, run_id: str, files: list[tuple[str, str, Optional[str]]]) -> None:
    """Each (context, path, digest) as a dataset input of the run: the UI's Datasets column."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = [
        DatasetInput(
            dataset=Dataset(
                name=Path(path).name,
                digest=(digest or "unknown")[:36],
                source_type="local",
                source=json.dumps({"uri": path}),
            ),
            tags=[InputTag("mlflow.data.context", context)],
        )
        for context, path, digest in files
    ]
    if inputs:
        client.log_inputs(run_id, datasets=inputs)


def checkpoint_models(client: Any, run_id: str, experiment_id: str) -> list[tuple[int, str]]:
    """(step, model id) of the checkpoints transformers' MLflowCallback logged for the run, oldest first: with
    `HF_MLFLOW_LOG_ARTIFACTS=1` each save is a pyfunc model named `checkpoint-N` holding the output folder's
    `checkpoint-N/` (the adapter's files where the model is a peft one)."""
    try:
        found = client.search_logged_models(
            experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'", max_results=1000
        )
    except Exception:  # noqa: BLE001 (a store without LoggedModels: none logged)
        return []
    out = []
    for model in found:
        name = getattr(model, "name", "") or ""
        if name.startswith("checkpoint-") and name[len("checkpoint-") :].isdigit():
            out.append((int(name[len("checkpoint-") :]), model.model_id))
    return sorted(out)


def checkpoint_adapter(model_id: str, dst: Path, tracking_uri: str) -> Optional[Path]:
    """The folder of a Trainer-logged checkpoint model that holds a peft adapter (`adapter_config.json`), or None."""
    import mlflow

    with fluent_uri(tracking_uri):
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{model_id}", dst_path=str(dst), tracking_uri=tracking_uri
            )
        )
    configs = sorted(local.rglob("adapter_config.json"), key=lambda p: len(p.parts))
    return configs[0].parent if configs else None
