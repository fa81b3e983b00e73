"""Trained adapters as MLflow models, and the data a run read as MLflow datasets.

- A trained adapter is logged as a LoggedModel of its run: a pyfunc model whose code is `served.py`,
  holding the peft adapter and the tokenizer only (`adapter` artifact), the base as a reference (a local
  folder or a hub id, with the dtype it trained in), params `max_new_tokens` and `temperature`, linked to
  the metrics logged at its final step. So `mlflow.pyfunc.load_model("models:/NAME@champion")` and
  `mlflow models serve` answer what `promote` registered as the run's `samples.md` says (the chat
  template, greedy, no echoed prompt), and the experiment's Models tab lists every trained adapter. The
  run's tag `tunelog.model_id` names it; tunelog's own readers fetch the adapter from it
  (`model_adapter`), so each adapter is stored once. Runs without one (older runs, merged stages) keep
  `adapter/`.
- Datasets: the train and eval files as run inputs (context `train` / `eval`), the eval file's digest
  being the run's eval key, so the UI's Datasets column shows what the changelog means by
  "not comparable".
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from .contract import TAG_MODEL_ID

MODEL_NAME = "model"  # the LoggedModel's name within its run
ADAPTER = "adapter"  # its artifact holding the peft files and the tokenizer


def signature():
    """Any question or chat in (see `served`); `max_new_tokens` and `temperature` (0: greedy) as params."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    from ..util.answers import ANSWER_TOKENS

    params = [ParamSpec("max_new_tokens", "long", ANSWER_TOKENS), ParamSpec("temperature", "double", 0.0)]
    return ModelSignature(inputs=None, params=ParamSchema(params))


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
    its metrics at `step` linked; returns the model id, also tagged on the run. The model is `served.py`
    (models from code) with the adapter and tokenizer as its `adapter` artifact, so it answers as
    `samples.md` did."""
    import tempfile

    import mlflow

    from ..util.answers import ANSWER_TOKENS

    run = client.get_run(run_id)
    # made here in the run's own experiment (the fluent API would make it in its current one)
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id, model_type="peft-adapter"
    )
    config = {"base": base, "dtype": _dtype_name(model), "max_new_tokens": ANSWER_TOKENS}
    with tempfile.TemporaryDirectory() as tmp, fluent_uri(client.tracking_uri), warnings.catch_warnings():
        # MLflow asks for an input example, which it would check by loading the base model at log time
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        adapter = Path(tmp) / ADAPTER
        model.save_pretrained(adapter)
        tokenizer.save_pretrained(adapter)
        info = mlflow.models.Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            python_model=str(Path(__file__).with_name("served.py")),
            artifacts={ADAPTER: str(adapter)},
            model_config=config,
            signature=signature(),
            pip_requirements=_requirements(),
            run_id=run_id,
            model_id=logged.model_id,
            step=step,
        )
    client.set_tag(run_id, TAG_MODEL_ID, info.model_id)
    return info.model_id


def _dtype_name(model: Any) -> str:
    """The dtype the base computes in (a 4-bit base's compute dtype): what the served model loads it as."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    quantization = getattr(getattr(base, "config", None), "quantization_config", None)
    compute = getattr(quantization, "bnb_4bit_compute_dtype", None) if quantization is not None else None
    dtype = compute or getattr(base, "dtype", torch.float32)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return str(dtype if dtype.is_floating_point else torch.float32).removeprefix("torch.")


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
    """A LoggedModel's adapter as the folder tunelog's readers know (peft files and the tokenizer together):
    the `adapter` artifact of tunelog's model, or, in models logged before it, the transformers flavor's
    `peft/` folder with its tokenizer component copied in."""
    import mlflow

    with fluent_uri(tracking_uri):  # MLflow's models:/ repository looks the model up through the fluent URI
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{model_id}", dst_path=str(dst), tracking_uri=tracking_uri
            )
        )
    if (local / "artifacts" / ADAPTER).is_dir():
        return local / "artifacts" / ADAPTER
    adapter = local / "peft"
    for file in (local / "components" / "tokenizer").glob("*"):
        shutil.copy2(file, adapter / file.name)
    return adapter


def log_datasets(client: Any, run_id: str, files: list[tuple[str, str, Optional[str]]]) -> None:
    """Each (context, path, digest) as a dataset input of the run: the UI's Datasets column. Runs that log the
    same dataset at the same moment (a sweep's workers) race on its row; the losers try again and find it."""
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
    if not inputs:
        return
    for attempt in range(RACE_TRIES):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except Exception:  # noqa: BLE001 (another run inserted the same dataset row first: it exists now)
            if attempt == RACE_TRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1) + random.random() * 0.05)


RACE_TRIES = 4  # MLflow's get-or-create of a dataset row is no transaction: runs started together collide


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
