"""Writing runs: the run context that always closes, buffered step metrics, SIGTERM as KILLED.

Guarantees:
- a run ends FINISHED, FAILED or KILLED: an exception, Ctrl-C or SIGTERM never
  leaves it RUNNING;
- step metrics are buffered and written by a low-priority background thread in
  batches, so logging every step costs the training loop a list append.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from ..errors import TrainingInterrupted
from ..util.owner import owner_tag
from ..vocabulary import Outcome
from .contract import (
    ADAPTER_ARTIFACT,
    OUTCOMES,
    TAG_EXPERIMENT_KIND,
    TAG_OUTCOME,
    TAG_OWNER,
    TAG_PARENT,
    TAG_REASON,
    TAG_RUN_NAME,
)
from .sqlite_file import closed_on_full_disk, disk_full, release_reserve
from .uri import sqlite_path

_FLUSH_SECONDS = 2.0


class RunLogger:
    """One open MLflow run: params, tags, buffered metrics and artifacts."""

    def __init__(self, client, run_id: str, experiment_id: str):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._pending: list[Any] = []
        self._lock = threading.Lock()
        self._writer: _BackgroundWriter | None = None
        self.left_open = False
        # the params the run holds, when this process knows them (a run it created): log_new_params then
        # needs no read of the store; None for a joined or resumed run until read once
        self._params: set[str] | None = None

    def leave_open(self, owner: str) -> None:
        """End this process's part without closing the run: a shared sweep run stays RUNNING while other
        invocations still train its trials, owned by one of them (so `tunelog gc` sees a live owner)."""
        self.set_tags({TAG_OWNER: owner})
        self.left_open = True

    # params and tags are few: logged synchronously so readers see them at once
    def log_params(self, params: Mapping[str, Any]) -> None:
        self.log_batch(params=params)

    def log_new_params(self, params: Mapping[str, Any], others_wrote: bool = False) -> None:
        """Params the run does not have yet (a resumed run keeps the values it was started with:
        MLflow refuses to change a param). `others_wrote`: another process may have logged params to this
        run (a script's TunelogCallback), so the store is read even for a run this process created."""
        if self._params is None or others_wrote:
            self._params = set(self.client.get_run(self.run_id).data.params)
        new = {k: v for k, v in params.items() if k not in self._params}
        if new:
            self.log_params(new)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.log_batch(tags=tags)

    def log_batch(self, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> None:
        """Params and tags in one write (each write to a SQLite store is a transaction: a sweep trial makes
        a dozen). Logged synchronously, so readers see them at once."""
        from mlflow.entities import Param, RunTag

        items = [Param(k, param_value(v)) for k, v in (params or {}).items()]
        labels = [RunTag(k, str(v)) for k, v in (tags or {}).items() if v is not None]
        if items or labels:
            self.client.log_batch(self.run_id, params=items, tags=labels, synchronous=True)
        if self._params is not None:
            self._params.update(params or {})

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

    def log_adapter(self, model: Any, tokenizer: Any, base: Optional[str], step: int) -> Optional[str]:
        """A trained peft adapter: the run's MLflow model (see `tracking.models`) when its base has a name (a
        folder or hub id), else, or when the flavor refuses it, peft's folder as `adapter/` with the
        tokenizer; the model id, or None for the folder. The metrics so far are flushed first, so those of
        `step` are linked to the model."""
        if base and tokenizer is not None:
            from .models import log_adapter_model

            self.flush()
            try:
                return log_adapter_model(self.client, self.run_id, model, tokenizer, base, step)
            except Exception as exc:  # noqa: BLE001 (the adapter must not be lost to a flavor's refusal)
                print(f"warning: adapter kept as a plain artifact, not an MLflow model: {exc}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            self.log_artifacts(tmp, ADAPTER_ARTIFACT)
        return None

    def log_datasets(self, files: list[tuple[str, str, Optional[str]]]) -> None:
        from .models import log_datasets

        log_datasets(self.client, self.run_id, files)

    def system_metrics(self, enabled: bool = True):
        from .models import system_metrics

        return system_metrics(self.run_id, self.client.tracking_uri, enabled)

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


def param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


class RunWrites:
    """The writing half of `Tracker`: needs `self.client`, `self.uri`, `self._experiments`, `self._joined_env_run`."""

    client: Any
    uri: str
    _experiments: dict[str, str]
    _aliases: dict[str, str]
    _joined_env_run: bool

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
        if (db := sqlite_path(self.uri)) is not None:  # a local store: artifacts beside the SQLite file
            location = (db.resolve().parent / "artifacts").as_uri()
        try:
            return self.client.create_experiment(
                name, artifact_location=location, tags={TAG_EXPERIMENT_KIND: "finetuning"}
            )
        except MlflowException:  # another worker created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _follow_joined_experiment(self, asked: str, experiment_id: str) -> None:
        """One tree in one experiment: when `mlflow run` created this process's run in another experiment than
        the spec names, the children (trials, stages, candidates) and the readers follow the run there."""
        self._experiments[asked] = experiment_id
        actual = self.client.get_experiment(experiment_id).name
        if actual != asked:
            self._aliases[asked] = actual
            print(
                f"under `mlflow run`: this run and its children go to experiment {actual!r}, where mlflow run "
                f"created it (the spec names {asked!r}; choose with mlflow run --experiment-name NAME)",
                file=sys.stderr,
            )

    def _env_run_id(self, parent_run_id: str | None) -> Optional[str]:
        """`mlflow run` hands its run to the entry point; only the top-level run of a process joins it."""
        run_id = os.environ.get("MLFLOW_RUN_ID")
        if run_id and parent_run_id is None and not self._joined_env_run:
            self._joined_env_run = True
            return run_id
        return None

    @contextmanager
    def run(
        self,
        experiment: str,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
    ) -> Iterator[RunLogger]:
        """An MLflow run that always ends FINISHED, FAILED or KILLED, whatever happens inside.

        `resume_run_id` reopens an earlier run (a resumed sweep) instead of creating one.
        """
        all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        all_tags[TAG_OWNER] = owner_tag()
        if parent_run_id:
            all_tags[TAG_PARENT] = parent_run_id
        from_env = self._env_run_id(parent_run_id)
        joined = from_env or resume_run_id
        if joined:
            self.client.update_run(joined, status="RUNNING")
            info = self.client.get_run(joined).info
            if from_env:
                self._follow_joined_experiment(experiment, info.experiment_id)
            run = RunLogger(self.client, joined, info.experiment_id)
            run.set_tags({**all_tags, **({TAG_RUN_NAME: run_name} if run_name else {})})
        else:
            created = self.client.create_run(self.experiment_id(experiment), tags=all_tags, run_name=run_name)
            run = RunLogger(self.client, created.info.run_id, created.info.experiment_id)
            run._params = set()  # a new run: every param it gets is logged through this logger
        status, full = "FAILED", False
        with _sigterm_raises():
            try:
                yield run
                status = "FINISHED"
            except (KeyboardInterrupt, TrainingInterrupted) as exc:
                status = "KILLED"
                said = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else str(exc) or "a signal"
                _record_failure(run, f"interrupted ({said})", Outcome.INTERRUPTED)
                raise
            except BaseException as exc:
                full = disk_full(exc) and release_reserve(self.uri)  # room for the closing writes
                _record_failure(run, f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
                raise
            finally:
                if run.left_open and status == "FINISHED":
                    run.flush()
                else:
                    _close(run, status, drop_unwritten=bool(full))
                    if status == "FAILED" and full:
                        closed_on_full_disk.append(run.run_id)

    def log_closed_run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, Any],
        params: Mapping[str, Any],
        parent_run_id: str | None = None,
        status: str = "FINISHED",
    ) -> str:
        """A light run recorded and closed at once (a rejected sweep trial: KILLED, so the runs table does not
        show it as a green "Finished" beside trained ones): tags and params, no metrics."""
        from mlflow.entities import Param, RunTag

        all_tags = {k: str(v) for k, v in tags.items() if v is not None}
        if parent_run_id:
            all_tags[TAG_PARENT] = parent_run_id
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name)
        self.client.log_batch(
            run.info.run_id,
            params=[Param(k, param_value(v)) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in all_tags.items()],
            synchronous=True,
        )
        self.client.set_terminated(run.info.run_id, status=status)
        return run.info.run_id

    def close_run(self, run_id: str, status: str, outcome: str, reason: str) -> bool:
        """Close a run some dead process left RUNNING; False when it was already closed."""
        if self.client.get_run(run_id).info.status != "RUNNING":
            return False
        RunLogger(self.client, run_id, "").set_outcome(outcome, reason)
        self.client.set_terminated(run_id, status=status)
        return True

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        RunLogger(self.client, run_id, "").set_tags(tags)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        RunLogger(self.client, run_id, "").log_params(params)

    def set_experiment_note(self, experiment: str, text: str) -> None:
        """The experiment's description in the MLflow UI (its `mlflow.note.content` tag)."""
        from .contract import TAG_NOTE

        experiment_id = self.experiment_id(self._aliases.get(experiment, experiment))
        self.client.set_experiment_tag(experiment_id, TAG_NOTE, text)
        if not self.client.get_experiment(experiment_id).tags.get(TAG_EXPERIMENT_KIND):  # `Default`, mlflow run's
            self.client.set_experiment_tag(experiment_id, TAG_EXPERIMENT_KIND, "finetuning")


def _record_failure(run: RunLogger, reason: str, outcome: str = Outcome.FAILED) -> None:
    """`outcome` (failed, or interrupted) unless the body already recorded a more precise one (oom, diverged...)."""
    try:
        current = run.client.get_run(run.run_id).data.tags.get(TAG_OUTCOME)
        if current in (None, "", Outcome.OK):
            run.set_outcome(outcome, reason)
    except Exception:  # never let bookkeeping hide the original error
        pass


def _close(run: RunLogger, status: str, drop_unwritten: bool = False) -> None:
    """Write what is buffered and the final status. On a full disk the buffered metrics are dropped if the
    reserve cannot take them: the status is what must reach the store."""
    try:
        run.flush()
    except Exception:
        if not drop_unwritten:
            raise
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
