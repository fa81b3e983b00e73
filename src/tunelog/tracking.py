"""The only module that talks to MLflow, and the tracking contract it writes.

Readers (changelog, promote, compare) rely on these names; a run logged by hand
with the same tags works as well as one tunelog started. See docs/architecture.md.

Guarantees:
- a run ends FINISHED, FAILED or KILLED: an exception, Ctrl-C or SIGTERM never
  leaves it RUNNING;
- step metrics are buffered and handed to MLflow's async logger in batches, so
  logging every step costs the training loop a list append.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from .errors import TrainingInterrupted
from .owner import owner_dead, owner_tag

# --- the tracking contract -------------------------------------------------
TAG_KIND = "tunelog.kind"  # train, trial, sweep, probe, stage, pipeline, import
TAG_BASED_ON = "tunelog.based_on"  # run id this run derives from
TAG_PHASE = "tunelog.phase"
TAG_NAME = "tunelog.name"  # human name
TAG_CONFIG = "tunelog.config"  # the named preset applied, if any
TAG_OUTCOME = "tunelog.outcome"  # ok, oom, diverged, rejected, failed, pruned
TAG_REASON = "tunelog.reason"
TAG_SPEC_HASH = "tunelog.spec_hash"
TAG_SPEC_FILE = "tunelog.spec_file"
TAG_LINT = "tunelog.lint"  # ids of the lint warnings the run started with
TAG_METRIC = "tunelog.metric"  # the headline metric's name...
TAG_DIRECTION = "tunelog.direction"  # ...and whether lower or higher is better
TAG_NOTE = "mlflow.note.content"  # shown by the MLflow UI
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
OUTCOMES = ("ok", "oom", "diverged", "rejected", "failed", "pruned")
TAG_STUDY = "tunelog.study"  # sweep trials and the sweep run: the Optuna study's name
TAG_TRIAL = "tunelog.trial"  # the trial's number in its study
TAG_BEST = "tunelog.best"  # "true" on the best trial's run
SPEC_ARTIFACT = "spec.yaml"
ADAPTER_ARTIFACT = "adapter"
PLOTS_ARTIFACT = "plots"

# Params the trainer adds that follow from the config (or the machine): readers leave them
# out of "what changed" between runs.
DERIVED_PARAMS = frozenset({"data.n_train", "data.n_eval", "train.total_steps", "train.warmup_steps_resolved",
                            "train.peak_lr_resolved", "train.device"})
TAG_OWNER = "tunelog.owner"  # host:pid of the process that opened the run (`tunelog gc` checks it)
TAG_IMPORT_KEY = "tunelog.import_key"  # identifies an imported legacy folder, so importing twice adds nothing

DEFAULT_STORE_DIR = "mlruns"
# MLflow draws a progress bar per artifact download; a stage chain makes many tiny ones.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
_FLUSH_SECONDS = 2.0


def default_store_dir() -> Path:
    return Path(os.environ.get("TUNELOG_STORE_DIR", DEFAULT_STORE_DIR)).resolve()


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set (a server, PostgreSQL...), else SQLite under ./mlruns."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = default_store_dir()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


_SQLITE_TUNED = False


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
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    _SQLITE_TUNED = True


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


@dataclass(frozen=True)
class RunRecord:
    """One run as readers see it: plain data, no MLflow objects."""

    run_id: str
    name: str
    status: str
    start_ms: int
    end_ms: Optional[int]
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]

    @property
    def kind(self) -> str:
        return self.tags.get(TAG_KIND, "")


class RunLogger:
    """One open MLflow run: params, tags, buffered metrics and artifacts."""

    def __init__(self, client, run_id: str, experiment_id: str):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._pending: list[Any] = []
        self._lock = threading.Lock()
        self._writer: _BackgroundWriter | None = None

    # params and tags are few: logged synchronously so readers see them at once
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        self.client.log_batch(self.run_id, params=items, synchronous=True)

    def log_new_params(self, params: Mapping[str, Any]) -> None:
        """Params the run does not have yet (a resumed run keeps the values it was started with:
        MLflow refuses to change a param)."""
        have = self.client.get_run(self.run_id).data.params
        new = {k: v for k, v in params.items() if k not in have}
        if new:
            self.log_params(new)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, tags=items, synchronous=True)

    def set_outcome(self, outcome: str, reason: str | None = None) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r}; accepted: {', '.join(OUTCOMES)}")
        self.set_tags({TAG_OUTCOME: outcome, TAG_REASON: reason or ""})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Buffer step metrics; a background writer hands them to the store in batches."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with self._lock:
            self._pending.extend(Metric(k, float(v), now, step or 0) for k, v in metrics.items())
        if self._writer is None:
            self._writer = _BackgroundWriter(self)

    def _take_pending(self) -> list[Any]:
        with self._lock:
            batch, self._pending = self._pending, []
        return batch

    def _put_back(self, batch: list[Any]) -> None:
        with self._lock:
            self._pending[:0] = batch

    def _write(self, batch: list[Any]) -> None:
        if batch:
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def flush(self) -> None:
        """Write everything buffered so far (the writer thread stops; a later log_metrics starts another)."""
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        self._write(self._take_pending())

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_artifact(self, local_file: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_file), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)


class _BackgroundWriter:
    """Writes a run's buffered metrics every few seconds from a low-priority thread.

    The thread lowers its own scheduling priority (Linux applies nice per thread), so
    the SQLite writes use CPU the training loop leaves idle instead of taking it from it.
    """

    def __init__(self, run: RunLogger, interval: float = _FLUSH_SECONDS):
        self.run = run
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tunelog-metrics", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 15)
        except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
            pass
        while not self._stop.wait(self.interval):
            batch = self.run._take_pending()
            try:
                self.run._write(batch)
            except Exception:  # keep training; the batch goes back and the final flush retries (and raises)
                self.run._put_back(batch)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


class Tracker:
    """Opens runs in the resolved store; joins the run `mlflow run` created (MLFLOW_RUN_ID)."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or tracking_uri()
        if self.uri.startswith("sqlite:"):
            tune_sqlite()
        self.client = _client(self.uri)
        self._joined_env_run = False
        self._experiments: dict[str, str] = {}

    def experiment_id(self, name: str) -> str:
        if name not in self._experiments:
            self._experiments[name] = self._get_or_create_experiment(name)
        return self._experiments[name]

    def _get_or_create_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # a local store: artifacts beside the SQLite file
            location = (Path(self.uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another worker created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _env_run_id(self, parent_run_id: str | None) -> Optional[str]:
        """`mlflow run` hands its run to the entry point; only the top-level run of a process joins it."""
        run_id = os.environ.get("MLFLOW_RUN_ID")
        if run_id and parent_run_id is None and not self._joined_env_run:
            self._joined_env_run = True
            return run_id
        return None

    @contextmanager
    def run(self, experiment: str, run_name: str | None = None, tags: Mapping[str, Any] | None = None,
            parent_run_id: str | None = None, resume_run_id: str | None = None) -> Iterator[RunLogger]:
        """An MLflow run that always ends FINISHED, FAILED or KILLED, whatever happens inside.

        `resume_run_id` reopens an earlier run (a resumed sweep) instead of creating one.
        """
        all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        all_tags[TAG_OWNER] = owner_tag()
        if parent_run_id:
            all_tags[TAG_PARENT] = parent_run_id
        joined = self._env_run_id(parent_run_id) or resume_run_id
        if joined:
            self.client.update_run(joined, status="RUNNING")
            info = self.client.get_run(joined).info
            run = RunLogger(self.client, joined, info.experiment_id)
            run.set_tags({**all_tags, **({TAG_RUN_NAME: run_name} if run_name else {})})
        else:
            created = self.client.create_run(self.experiment_id(experiment), tags=all_tags, run_name=run_name)
            run = RunLogger(self.client, created.info.run_id, created.info.experiment_id)
        status = "FAILED"
        with _sigterm_raises():
            try:
                yield run
                status = "FINISHED"
            except (KeyboardInterrupt, TrainingInterrupted) as exc:
                status = "KILLED"
                _record_failure(run, f"interrupted ({type(exc).__name__})")
                raise
            except BaseException as exc:
                _record_failure(run, f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
                raise
            finally:
                _close(run, status)


    def log_closed_run(self, experiment: str, run_name: str, tags: Mapping[str, Any], params: Mapping[str, Any],
                       parent_run_id: str | None = None) -> str:
        """A light run recorded and closed at once (a rejected sweep trial): tags and params, no metrics."""
        from mlflow.entities import Param, RunTag

        all_tags = {k: str(v) for k, v in tags.items() if v is not None}
        if parent_run_id:
            all_tags[TAG_PARENT] = parent_run_id
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name)
        self.client.log_batch(run.info.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()],
                              tags=[RunTag(k, v) for k, v in all_tags.items()], synchronous=True)
        self.client.set_terminated(run.info.run_id, status="FINISHED")
        return run.info.run_id

    def close_run(self, run_id: str, status: str, outcome: str, reason: str) -> bool:
        """Close a run some dead process left RUNNING; False when it was already closed."""
        if self.client.get_run(run_id).info.status != "RUNNING":
            return False
        RunLogger(self.client, run_id, "").set_outcome(outcome, reason)
        self.client.set_terminated(run_id, status=status)
        return True

    def stale_runs(self, older_than_s: float) -> list[tuple[RunRecord, str]]:
        """Runs left RUNNING with no live process: (record, why), across every experiment.

        A run whose owner process lives on this host is never stale. Otherwise it is stale when
        nothing was logged to it (start, or its latest metric) for `older_than_s`: a run that a
        failed `mlflow run` environment build, a SIGKILL or a lost machine left behind.
        """
        now_ms = time.time() * 1000
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        running = self.client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=50_000) \
            if experiments else []
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
            stale.append((_record(run), f"left RUNNING: {who}, nothing logged for {idle_s / 60:.0f} min; "
                                        f"closed by tunelog gc"))
        return stale

    def get_run(self, run_id: str) -> RunRecord:
        """A run by id; a clear error when the store has no such run."""
        from mlflow.exceptions import MlflowException

        from .errors import TunelogError

        try:
            return _record(self.client.get_run(run_id))
        except MlflowException:
            raise TunelogError(f"no run {run_id!r} in {self.uri}") from None

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        RunLogger(self.client, run_id, "").set_tags(tags)

    def find_runs(self, experiment: str, tags: Mapping[str, str]) -> list[RunRecord]:
        """Runs of `experiment` carrying every tag given (oldest first)."""
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            return []
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([found.experiment_id], filter_string=query, max_results=50_000,
                                       order_by=["attributes.start_time ASC"])
        return [_record(run) for run in runs]


    def all_runs(self, experiment: str) -> list[RunRecord]:
        """Every active run of an experiment, oldest first, as plain records.

        On a SQL store the four tables are read with one query each, about ten times faster
        than MLflow's run search for a 10,000-run history; any surprise in the schema falls
        back to the search API, which gives the same records (a test holds the two equal).
        """
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            from .errors import TunelogError

            names = [e.name for e in self.client.search_experiments()]
            raise TunelogError(f"no experiment {experiment!r} in {self.uri}; experiments: {', '.join(names) or 'none'}")
        if self.uri.split(":", 1)[0].split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql"):
            try:
                return self._all_runs_sql(found.experiment_id)
            except Exception:  # an MLflow schema this code does not know: take the slow, supported road
                pass
        return self._all_runs_api(found.experiment_id)

    def _all_runs_sql(self, experiment_id: str) -> list[RunRecord]:
        import math

        from sqlalchemy import create_engine, text

        engine = create_engine(self.uri)
        active = "r.experiment_id = :e AND r.lifecycle_stage = 'active'"
        with engine.connect() as con:
            def rows(table: str, columns: str):
                return con.execute(text(f"SELECT x.run_uuid, {columns} FROM {table} x JOIN runs r "
                                        f"ON x.run_uuid = r.run_uuid WHERE {active}"), {"e": int(experiment_id)})

            runs = con.execute(text(f"SELECT r.run_uuid, r.name, r.status, r.start_time, r.end_time FROM runs r "
                                    f"WHERE {active} ORDER BY r.start_time ASC, r.run_uuid ASC"),
                               {"e": int(experiment_id)}).all()
            params: dict[str, dict[str, str]] = {r[0]: {} for r in runs}
            tags: dict[str, dict[str, str]] = {r[0]: {} for r in runs}
            metrics: dict[str, dict[str, float]] = {r[0]: {} for r in runs}
            for run_id, key, value in rows("params", "x.key, x.value"):
                params[run_id][key] = value
            for run_id, key, value in rows("tags", "x.key, x.value"):
                tags[run_id][key] = value
            for run_id, key, value, is_nan in rows("latest_metrics", "x.key, x.value, x.is_nan"):
                metrics[run_id][key] = math.nan if is_nan else float(value)
        engine.dispose()
        return [RunRecord(run_id=rid, name=tags[rid].get(TAG_RUN_NAME) or name or rid[:8], status=status,
                          start_ms=start or 0, end_ms=end, params=params[rid], metrics=metrics[rid], tags=tags[rid])
                for rid, name, status, start, end in runs]

    def _all_runs_api(self, experiment_id: str) -> list[RunRecord]:
        records, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], max_results=50_000, page_token=token,
                                           order_by=["attributes.start_time ASC", "attributes.run_id ASC"])
            records.extend(_record(run) for run in page)
            token = page.token
            if not token:
                return records

    def create_finished_run(self, experiment: str, run_name: str, start_ms: int, end_ms: int, status: str,
                            params: Mapping[str, Any], tags: Mapping[str, Any],
                            metrics: list[tuple[str, float, int, int]]) -> str:
        """A run written in one go with its own times (an imported legacy run); metrics as (key, value, ms, step)."""
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(self.experiment_id(experiment), start_time=start_ms, run_name=run_name)
        self.client.log_batch(run.info.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()],
                              tags=[RunTag(k, str(v)) for k, v in tags.items() if v is not None],
                              metrics=[Metric(k, v, ts, step) for k, v, ts, step in metrics], synchronous=True)
        self.client.set_terminated(run.info.run_id, status=status, end_time=end_ms)
        return run.info.run_id


    def download(self, run_id: str, artifact_path: str, dst: str) -> str:
        """One artifact (file or folder) of a run, into `dst`; returns the local path."""
        import mlflow

        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=dst,
                                                   tracking_uri=self.uri)

    # --- the model registry -----------------------------------------------------

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
        source = f"{self.client.get_run(run_id).info.artifact_uri.rstrip('/')}/{ADAPTER_ARTIFACT}"
        return self.client.create_model_version(name, source, run_id=run_id, description=description,
                                                tags={k: str(v) for k, v in tags.items() if v is not None})

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


def _record(run) -> RunRecord:
    return RunRecord(run_id=run.info.run_id, name=run.info.run_name or run.info.run_id[:8], status=run.info.status,
                     start_ms=run.info.start_time or 0, end_ms=run.info.end_time, params=dict(run.data.params),
                     metrics=dict(run.data.metrics), tags=dict(run.data.tags))


def _record_failure(run: RunLogger, reason: str) -> None:
    """Outcome `failed` unless the body already recorded a more precise one (oom, diverged...)."""
    try:
        current = run.client.get_run(run.run_id).data.tags.get(TAG_OUTCOME)
        if current in (None, "", "ok"):
            run.set_outcome("failed", reason)
    except Exception:  # never let bookkeeping hide the original error
        pass


def _close(run: RunLogger, status: str) -> None:
    try:
        run.flush()
    finally:
        run.client.set_terminated(run.run_id, status=status)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception in the main thread so the run is closed KILLED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise TrainingInterrupted("terminated by SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)



def adapter_resolver(spec) -> Callable[[str], tuple[Path, Any]]:
    """Resolves `model.adapter`: a folder as is; `runs:/RUN/adapter` downloaded with that run's spec.

    Downloads are cached per process, so a chain of stages fetches each adapter once.
    """
    from .errors import SpecError

    def resolve(ref: str) -> tuple[Path, Any]:
        from .spec import is_uri

        if not is_uri(ref):
            return spec.path(ref), None
        if not ref.startswith("runs:/"):
            raise SpecError(spec.source, [("model.adapter", f"{ref}: accepted: a folder or runs:/RUN_ID/adapter")])
        return _fetch_run_adapter(ref)

    return resolve


_FETCHED: dict[str, tuple[Path, Any]] = {}


def resolve_model_uri(uri: str) -> str:
    """models:/NAME@ALIAS or models:/NAME/VERSION to the runs:/RUN/adapter it was registered from."""
    from .errors import TunelogError

    client = _client(tracking_uri())
    body = uri[len("models:/"):] if uri.startswith("models:/") else ""
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = body.rsplit("/", 1)
            version = client.get_model_version(name, number)
    except Exception as exc:
        raise TunelogError(f"cannot resolve {uri!r}: {str(exc).splitlines()[0]}") from None
    return f"runs:/{version.run_id}/{ADAPTER_ARTIFACT}"


def _fetch_run_adapter(ref: str) -> tuple[Path, Any]:
    import atexit
    import shutil
    import tempfile

    import mlflow

    from .spec import validate

    if ref not in _FETCHED:
        run_id, _, path = ref[len("runs:/"):].partition("/")
        folder = Path(tempfile.mkdtemp(prefix="tunelog-adapter-"))
        atexit.register(shutil.rmtree, folder, True)  # cached for this process, gone with it
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path or ADAPTER_ARTIFACT,
                                                    dst_path=str(folder), tracking_uri=tracking_uri())
        spec_file = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SPEC_ARTIFACT,
                                                        dst_path=str(folder), tracking_uri=tracking_uri())
        import yaml

        raw = yaml.safe_load(Path(spec_file).read_text())
        _FETCHED[ref] = (Path(local), validate(raw, f"{ref} (spec of run {run_id})", str(Path(local).parent)))
    return _FETCHED[ref]
