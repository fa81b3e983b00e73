"""The Model Registry: versions, aliases and model URIs (registry stages are deprecated: aliases)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any, Optional

from ..errors import TunelogError
from ..util.redact import redact_url
from .contract import ADAPTER_ARTIFACT, OUTPUTS_ARTIFACT, TAG_MODEL_ID
from .models import checkpoint_models, fluent_uri
from .store import client_for, require_store, tracking_uri


class RegistryOps:
    """The registry half of `Tracker`: needs `self.client`."""

    client: Any

    def registered_version_of(self, name: str, run_id: str) -> Optional[Any]:
        versions = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        return versions[0] if versions else None

    def register_adapter(self, name: str, run_id: str, tags: Mapping[str, Any], description: str) -> Any:
        """A new version of `name` from the run's adapter, with its tags and description in one call,
        so a version is either complete or absent."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException:  # already there
            pass
        run = self.client.get_run(run_id)
        model_id = run.data.tags.get(TAG_MODEL_ID)
        if model_id:  # the run's MLflow model: mlflow.pyfunc.load_model and `mlflow models serve` take it
            source = f"models:/{model_id}"
        else:  # an older run, or a command trainer's weights: registered as the plain folder
            folder = self.adapter_folder(run_id) or ADAPTER_ARTIFACT
            source = f"{run.info.artifact_uri.rstrip('/')}/{folder}"
        with fluent_uri(self.client.tracking_uri):  # MLflow resolves a `models:/m-…` source through its own URI
            version = self.client.create_model_version(
                name,
                source,
                run_id=run_id,
                description=description,
                tags={k: str(v) for k, v in tags.items() if v is not None},
                model_id=model_id,
            )
        if model_id:  # as mlflow.register_model does: the Models tab's "Registered models" column reads it
            with contextlib.suppress(MlflowException):
                seen = self.client.get_logged_model(model_id).tags.get("mlflow.modelVersions")
                listed = [*(json.loads(seen) if seen else []), {"name": name, "version": version.version}]
                self.client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps(listed)})
        return version

    def adapter_folder(self, run_id: str) -> Optional[str]:
        """The run's artifact folder holding its trained weights (`adapter_folder_of`)."""
        return adapter_folder_of(self.client, run_id)

    def has_adapter(self, run_id: str) -> bool:
        """The run has something a model version can point at: its MLflow model, weights in a folder, or a
        checkpoint transformers' MLflowCallback logged."""
        run = self.client.get_run(run_id)
        return (
            bool(run.data.tags.get(TAG_MODEL_ID))
            or self.adapter_folder(run_id) is not None
            or bool(checkpoint_models(self.client, run_id, run.info.experiment_id))
        )

    def version_by_alias(self, name: str, alias: str) -> Optional[Any]:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def tag_version(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, version, key, value)


def adapter_folder_of(client: Any, run_id: str) -> Optional[str]:
    """The run's artifact folder holding its trained weights: `adapter/` (tunelog's trainer, the callback's
    plain folder) or `outputs/` when the command trainer logged weights there (`*.safetensors`, `*.bin`,
    `*.pt`); None when the run kept none."""
    if client.list_artifacts(run_id, ADAPTER_ARTIFACT):
        return ADAPTER_ARTIFACT
    outputs = client.list_artifacts(run_id, OUTPUTS_ARTIFACT)
    if any(f.path.endswith((".safetensors", ".bin", ".pt")) for f in outputs):
        return OUTPUTS_ARTIFACT
    return None


def run_adapter_folder(run_id: str) -> Optional[str]:
    """`adapter_folder_of` in the store tunelog reads."""
    return adapter_folder_of(client_for(tracking_uri(create=False)), run_id)


def resolve_model_uri(uri: str) -> str:
    """models:/NAME@ALIAS or models:/NAME/VERSION to the runs:/RUN/adapter it was registered from."""
    store = tracking_uri(create=False)
    require_store(store)
    client = client_for(store)
    body = uri[len("models:/") :] if uri.startswith("models:/") else ""
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = body.rsplit("/", 1)
            version = client.get_model_version(name, number)
    except Exception as exc:
        raise TunelogError(
            f"cannot resolve {uri!r} in {redact_url(store)}: {str(exc).splitlines()[0]} (tunelog reads the store "
            f"MLFLOW_TRACKING_URI names, else the nearest mlruns/mlflow.db)"
        ) from None
    return f"runs:/{version.run_id}/{ADAPTER_ARTIFACT}"


def newest_checkpoint_model(run_id: str) -> Optional[str]:
    """The model id of the newest checkpoint transformers' MLflowCallback logged for the run (never an older one)."""
    client = client_for(tracking_uri(create=False))
    found = checkpoint_models(client, run_id, client.get_run(run_id).info.experiment_id)
    return found[-1][1] if found else None


def run_model_id(run_id: str) -> Optional[str]:
    """The run's trained adapter as a LoggedModel (tag `tunelog.model_id`), or None."""
    return client_for(tracking_uri(create=False)).get_run(run_id).data.tags.get(TAG_MODEL_ID)
