"""Where the store is, and reading it back: runs as plain records, fast on SQL stores.

Readers (changelog, promote, gc, reproduce) see `RunRecord`s, never MLflow objects.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from ..errors import TunelogError
from ..util.owner import owner_dead
from ..util.redact import redact_url
from . import bulk
from .contract import TAG_OWNER, RunRecord
from .dialects import understand
from .uri import is_database, is_server, sqlite_path

DEFAULT_STORE_DIR = "mlruns"
# MLflow draws a progress bar per artifact download; a stage chain makes many tiny ones.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow prints "View run NAME at: URL" for every run a server closes (twice per sweep trial): tunelog says once,
# at the end, where everything went.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def default_store_dir() -> Path:
    """`TUNELOG_STORE_DIR`, else the nearest `mlruns/` holding an `mlflow.db` in the working directory or one of
    its parents (found the way git finds `.git`: a verb run from a sub-folder uses the project's store instead
    of starting an empty one), else `./mlruns`."""
    if os.environ.get("TUNELOG_STORE_DIR"):
        return Path(os.environ["TUNELOG_STORE_DIR"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / DEFAULT_STORE_DIR / "mlflow.db").is_file():
            return folder / DEFAULT_STORE_DIR
    return here / DEFAULT_STORE_DIR


def tracking_uri(create: bool = True) -> str:
    """`MLFLOW_TRACKING_URI` when set (a server, PostgreSQL...), else the project's SQLite store
    (default_store_dir). A relative SQLite path is made absolute against the working directory: a script
    started in another folder, or a later `cd`, must still find the same file. `create=False` leaves the
    folder alone (a reading verb never starts an empty store)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return absolute_uri(uri)
    store = default_store_dir()
    if create:
        store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def absolute_uri(uri: str) -> str:
    """`sqlite:///mlruns/mlflow.db` as `sqlite:////abs/mlruns/mlflow.db`; every other URI as given."""
    path = sqlite_path(uri)
    if path is None or path.is_absolute() or not str(path):
        return uri
    return f"sqlite:///{path.resolve()}"


def pin_tracking_uri() -> str:
    """Resolves the store once, at the start of a command, and exports it as an absolute
    `MLFLOW_TRACKING_URI`: every child (a trial's script, `mlflow run`'s entry point, MLflow's own fluent
    API inside this process) then opens the same file wherever it runs. The folder is not created here."""
    uri = tracking_uri(create=False)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def require_store(uri: str) -> None:
    """A reading verb on a SQLite store that does not exist: an error saying where it looked, not an
    empty store made there."""
    path = sqlite_path(uri)
    if path is not None and str(path) and not path.exists():
        raise TunelogError(
            f"no tunelog store at {path}: run from the folder holding mlruns/ (or one below it), or point "
            f"MLFLOW_TRACKING_URI at the store (sqlite:////abs/path/mlflow.db, a server, a database)"
        )


_SQLITE_TUNED = False


_LEFT_ALONE: set[str] = set()  # SQLite files opened only to read (`analyze` on a user's study)


def leave_alone(path: str) -> None:
    """This SQLite file is read, never tuned: `tune_sqlite` switches no journal mode on it."""
    _LEFT_ALONE.add(str(Path(path).resolve()))


def tune_sqlite() -> None:
    """WAL journal and synchronous=NORMAL on every SQLite connection this process opens.

    A commit then costs a fraction of a millisecond instead of an fsync; WAL also lets
    sweep workers read while one writes. Durable across crashes of the program; the
    last transactions may be lost on power loss, which experiment tracking can afford.
    """
    global _SQLITE_TUNED
    if _SQLITE_TUNED:
        return
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            cursor = dbapi_conn.cursor()
            files = {row[2] for row in cursor.execute("PRAGMA database_list") if row[2]}
            if not files & _LEFT_ALONE:  # a user's database opened to read: its journal mode stays theirs
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    _SQLITE_TUNED = True


def client_for(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def download_artifacts(run_id: str, artifact_path: str, dst: str, uri: Optional[str] = None) -> str:
    """One artifact (file or folder) of a run, into `dst`; returns the local path."""
    import mlflow

    return mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=dst, tracking_uri=uri or tracking_uri()
    )


REST_WINDOWS = 8  # concurrent start-time windows when reading a whole experiment from a tracking server


class StoreReads:
    """The reading half of `Tracker`: needs `self.client` and `self.uri`."""

    client: Any
    uri: str
    _experiment_names: dict[str, str]
    _aliases: dict[str, str]

    def experiment_alias(self, name: str) -> str:
        """The experiment a name stands for in this process (the one `mlflow run` put its run in)."""
        return self._aliases.get(name, name)

    def experiment_name(self, experiment_id: str) -> str:
        if experiment_id not in self._experiment_names:
            self._experiment_names[experiment_id] = self.client.get_experiment(experiment_id).name
        return self._experiment_names[experiment_id]

    def _record(self, run, experiment_name: Optional[str] = None) -> RunRecord:
        return RunRecord(
            run_id=run.info.run_id,
            name=run.info.run_name or run.info.run_id[:8],
            status=run.info.status,
            start_ms=run.info.start_time or 0,
            end_ms=run.info.end_time,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            tags=dict(run.data.tags),
            experiment_id=run.info.experiment_id,
            experiment_name=experiment_name or self.experiment_name(run.info.experiment_id),
        )

    def get_run(self, run_id: str) -> RunRecord:
        """A run by id; a clear error when the store has no such run."""
        from mlflow.exceptions import MlflowException

        try:
            return self._record(self.client.get_run(run_id))
        except MlflowException:
            raise TunelogError(f"no run {run_id!r} in {redact_url(self.uri)}") from None

    def find_runs(self, experiment: str, tags: Mapping[str, str]) -> list[RunRecord]:
        """Runs of `experiment` carrying every tag given (oldest first)."""
        found = self.client.get_experiment_by_name(self.experiment_alias(experiment))
        if found is None:
            return []
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            [found.experiment_id], filter_string=query, max_results=50_000, order_by=["attributes.start_time ASC"]
        )
        return [self._record(run) for run in runs]

    def all_runs(self, experiment: str) -> list[RunRecord]:
        """Every active run of an experiment, oldest first, as plain records; runs another tool logged read
        as tunelog reads its own (`dialects.understand`: in memory, nothing written)."""
        return understand(self.stored_runs(experiment))

    def stored_runs(self, experiment: str) -> list[RunRecord]:
        """Every active run of an experiment, oldest first, as the store holds them.

        On a SQL store the four tables are read with one query each, about ten times faster
        than MLflow's run search for a 10,000-run history; `mlflow server --app-name tunelog` runs
        the same queries for a reader over REST. Any surprise in the schema, and a plain server,
        take the search API, which gives the same records (a test holds the roads equal).
        """
        experiment = self.experiment_alias(experiment)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            names = [e.name for e in self.client.search_experiments()]
            raise TunelogError(
                f"no experiment {experiment!r} in {redact_url(self.uri)}; experiments: {', '.join(names) or 'none'}"
            )
        if is_database(self.uri):
            try:
                return self._all_runs_sql(found.experiment_id, experiment)
            except Exception:  # an MLflow schema this code does not know: take the slow, supported road
                pass
        if is_server(self.uri):
            served = self._all_runs_server(found.experiment_id, experiment)
            if served is not None:
                return served
        return self._all_runs_api(found.experiment_id, experiment)

    def _all_runs_sql(self, experiment_id: str, experiment: str) -> list[RunRecord]:
        from sqlalchemy import create_engine

        engine = create_engine(self.uri)
        try:
            return bulk.read_runs(engine, experiment_id, experiment)
        finally:
            engine.dispose()

    def _host_creds(self):
        """The client's own way into the server (its token or basic auth), for requests made by hand."""
        return self.client._tracking_client.store.get_host_creds()

    def _all_runs_server(self, experiment_id: str, experiment: str) -> Optional[list[RunRecord]]:
        """From `mlflow server --app-name tunelog`'s bulk answer (the same four queries, run by the server):
        one request, no search API. None where the server does not offer it (plain `mlflow server`)."""
        from mlflow.utils.rest_utils import http_request

        try:
            answer = http_request(
                self._host_creds(), bulk.RUNS_PATH, "GET", params={"experiment_id": experiment_id}, max_retries=0
            )
            if answer.status_code != 200:
                return None
            return bulk.from_json(answer.text, experiment_id, experiment)
        except Exception:  # noqa: BLE001 (an answer this code does not know: the search API's road)
            return None

    def _all_runs_api(self, experiment_id: str, experiment: str) -> list[RunRecord]:
        """Through the search API. Against a tracking server the runs are fetched in `REST_WINDOWS` start-time
        windows at once: the server's time goes into turning runs into JSON, one request is one of its
        workers busy (16 s for 10,000 runs), and its workers serve windows side by side (under 10 s on 2
        cores)."""
        if not is_server(self.uri):
            return self._search_window(experiment_id, experiment, "")
        ends = [
            self.client.search_runs([experiment_id], max_results=1, order_by=[f"attributes.start_time {way}"])
            for way in ("ASC", "DESC")
        ]
        if not ends[0]:
            return []
        first, last = ends[0][0].info.start_time, ends[1][0].info.start_time + 1
        edges = [first + (last - first) * i // REST_WINDOWS for i in range(REST_WINDOWS + 1)]
        windows = [
            f"attributes.start_time >= {a} and attributes.start_time < {b}" for a, b in zip(edges, edges[1:]) if b > a
        ]
        with ThreadPoolExecutor(len(windows)) as pool:
            parts = pool.map(lambda where: self._search_window(experiment_id, experiment, where), windows)
            return [record for part in parts for record in part]

    def _search_window(self, experiment_id: str, experiment: str, where: str) -> list[RunRecord]:
        if is_server(self.uri):
            try:
                return self._search_window_json(experiment_id, experiment, where)
            except Exception:  # an older or newer server's answer this code does not know: the client's road
                pass
        records, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id],
                where,
                max_results=50_000,
                page_token=token,
                order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
            )
            records.extend(self._record(run, experiment) for run in page)
            token = page.token
            if not token:
                return records

    def _search_window_json(self, experiment_id: str, experiment: str, where: str) -> list[RunRecord]:
        """The REST search read as plain JSON: MLflow's client turns each run into protobuf objects, then
        entities, a few seconds of Python for 10,000 runs that the server needs more on a small machine."""
        from mlflow.utils.rest_utils import http_request

        creds = self._host_creds()
        body: dict[str, Any] = {
            "experiment_ids": [experiment_id],
            "filter": where,
            "max_results": 50_000,
            "order_by": ["attributes.start_time ASC", "attributes.run_id ASC"],
        }
        records: list[RunRecord] = []
        while True:
            page = http_request(creds, "/api/2.0/mlflow/runs/search", "POST", json=body).json()
            for run in page.get("runs", []):
                info, data = run["info"], run.get("data", {})
                records.append(
                    RunRecord(
                        run_id=info["run_id"],
                        name=info.get("run_name") or info["run_id"][:8],
                        status=info["status"],
                        start_ms=int(info.get("start_time") or 0),
                        end_ms=int(info["end_time"]) if info.get("end_time") else None,
                        params={p["key"]: p.get("value", "") for p in data.get("params", [])},
                        metrics={m["key"]: float(m["value"]) for m in data.get("metrics", [])},
                        tags={x["key"]: x.get("value", "") for x in data.get("tags", [])},
                        experiment_id=str(info["experiment_id"]),
                        experiment_name=experiment,
                    )
                )
            if not page.get("next_page_token"):
                return records
            body["page_token"] = page["next_page_token"]

    def stale_runs(self, older_than_s: float) -> list[tuple[RunRecord, str]]:
        """Runs left RUNNING with no live process: (record, why), across every experiment.

        A run whose owner process lives on this host is never stale. Otherwise it is stale when
        nothing was logged to it (start, or its latest metric) for `older_than_s`: a run that a
        failed `mlflow run` environment build, a SIGKILL or a lost machine left behind.
        """
        now_ms = time.time() * 1000
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        running = (
            self.client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=50_000)
            if experiments
            else []
        )
        stale = []
        for run in running:
            owner = run.data.tags.get(TAG_OWNER, "")
            if owner and not owner_dead(owner) and owner.rpartition(":")[0] == socket.gethostname():
                continue  # its process is alive here
            stamps = [m.timestamp for m in getattr(run.data, "_metric_objs", [])] + [run.info.start_time or 0]
            idle_s = (now_ms - max(stamps)) / 1000
            if idle_s < older_than_s:
                continue
            who = f"process {owner} is gone" if owner else "no tunelog process recorded"
            stale.append(
                (
                    self._record(run),
                    f"left RUNNING: {who}, nothing logged for {idle_s / 60:.0f} min; closed by tunelog gc",
                )
            )
        return stale

    def download(self, run_id: str, artifact_path: str, dst: str) -> str:
        """One artifact (file or folder) of a run, into `dst`; returns the local path."""
        return download_artifacts(run_id, artifact_path, dst, self.uri)
