"""The run context: an MLflow run that always closes, whatever happens inside.

Guarantees:
- a run ends FINISHED, FAILED or KILLED: an exception, Ctrl-C or SIGTERM never
  leaves it RUNNING;
- a run created here is written through a `RunLogger` (see `logger`): few writes, buffered metrics.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Optional

from ..errors import TrainingInterrupted
from ..util.owner import owner_tag
from ..vocabulary import Outcome
from .contract import TAG_EXPERIMENT_KIND, TAG_OUTCOME, TAG_OWNER, TAG_PARENT, TAG_RUN_NAME
from .logger import RunLogger, param_value
from .sqlite_file import closed_on_full_disk, disk_full, release_reserve
from .uri import sqlite_path


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
            run = RunLogger(self.client, joined, info.experiment_id, info.artifact_uri)
            run.set_tags({**all_tags, **({TAG_RUN_NAME: run_name} if run_name else {})})
        else:
            created = self.client.create_run(self.experiment_id(experiment), tags=all_tags, run_name=run_name)
            info = created.info  # a new run: every param it gets is logged through this logger
            run = RunLogger(self.client, info.run_id, info.experiment_id, info.artifact_uri, new=True)
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
            run.set_outcome(outcome, reason, alone=True)
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
