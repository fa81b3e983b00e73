"""The only package that talks to MLflow, and the tracking contract it writes.

- `contract`: tag names, outcomes, run kinds, artifact names, `RunRecord`, `better`/`best_of`;
- `run`: the run context (always closed), buffered metrics, SIGTERM as KILLED;
- `store`: where the store is, reading runs back (one query per table on SQL stores), gc;
- `sqlite_file`: a damaged SQLite store refused in one line, a new one's tables made under a lock;
- `bulk`: those per-table queries, shared with `server_app` (`mlflow server --app-name tunelog`);
- `finished`: finished runs written in one go (an import), many in one transaction on a SQL store;
- `registry`: model versions, aliases, `models:/` URIs;
- `models`: trained adapters as LoggedModels (the transformers flavor), datasets, system metrics.
- `dialects`: runs other tools logged (transformers, Lightning, optuna-integration, hand-written loops) read
  as tunelog reads its own, in memory (`understand`, called by `Tracker.all_runs`);
- `history`: a run's metric history replaced by a trainer's own record.

- `uri`: what kind of store a tracking URI names (SQLite file, database, server), decided once.

`Tracker` puts the reads, the writes, the registry and finished-run writing over one MLflow client.
See docs/tracking-contract.md.
"""

from __future__ import annotations

from .contract import *  # noqa: F401,F403  (the contract's names: t.TAG_KIND, t.KIND_SWEEP...)
from .contract import RunRecord, best_of, better
from .dialects import is_native, understand
from .finished import FinishedRun, FinishedRuns
from .logger import RunLogger
from .models import checkpoint_adapter, model_adapter
from .registry import RegistryOps, newest_checkpoint_model, resolve_model_uri, run_adapter_folder, run_model_id
from .run import RunWrites
from .sqlite_file import check_sqlite_store, create_sqlite_store_once, keep_reserve, sqlite_damage
from .store import (
    StoreReads,
    absolute_uri,
    client_for,
    default_store_dir,
    download_artifacts,
    leave_alone,
    pin_tracking_uri,
    require_store,
    tracking_uri,
    tune_sqlite,
)
from .uri import browsable_with_mlflow_ui, is_database, is_server, is_sqlite, sqlite_path


class Tracker(StoreReads, RunWrites, RegistryOps, FinishedRuns):
    """Opens runs in the resolved store (joining the run `mlflow run` created) and reads them back."""

    def __init__(self, uri: str | None = None, *, reading: bool = False):
        """`reading=True`: a verb that only reads (changelog, diff, promote...) never creates a store; a
        missing SQLite file is an error naming where it looked."""
        self.uri = uri or tracking_uri(create=not reading)
        if reading:
            require_store(self.uri)
        if is_sqlite(self.uri):
            check_sqlite_store(self.uri)
            tune_sqlite()
            create_sqlite_store_once(self.uri)
            keep_reserve(self.uri)
        self.client = client_for(self.uri)
        self._joined_env_run = False
        self._experiments: dict[str, str] = {}
        self._experiment_names: dict[str, str] = {}
        self._aliases: dict[str, str] = {}  # spec's experiment -> the one `mlflow run` chose


__all__ = [
    "is_native",
    "leave_alone",
    "checkpoint_adapter",
    "newest_checkpoint_model",
    "understand",
    "FinishedRun",
    "absolute_uri",
    "pin_tracking_uri",
    "require_store",
    "RunLogger",
    "RunRecord",
    "Tracker",
    "best_of",
    "better",
    "client_for",
    "default_store_dir",
    "download_artifacts",
    "model_adapter",
    "run_adapter_folder",
    "run_model_id",
    "sqlite_damage",
    "resolve_model_uri",
    "tracking_uri",
    "tune_sqlite",
]
