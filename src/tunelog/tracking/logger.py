"""Writing to one open run: params, tags, buffered metrics, artifacts and MLflow's system metrics.

Writes are few: each write to a SQLite store is a transaction, and a sweep's cheap trial once paid eleven.
Step metrics are buffered and written by a low-priority background thread in batches, so logging every
step costs the training loop a list append; params and tags given to `later` wait for the run's next
write and go in it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, Optional

from .contract import ADAPTER_ARTIFACT, OUTCOMES, TAG_OUTCOME, TAG_OWNER, TAG_REASON, TAG_WARNING

SAMPLING_S = 10.0  # MLflow's default; MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it
MONITOR_AFTER_S = 1.0  # system metrics start once a run has lasted this long (none for shorter ones)
_FLUSH_SECONDS = 2.0


class _Waiting(NamedTuple):
    """What a run's next write takes: staged params and tags, buffered metrics."""

    params: dict[str, Any]
    tags: dict[str, Any]
    metrics: list[Any]


class RunLogger:
    """One open MLflow run: params, tags, buffered metrics and artifacts. What waits (step metrics, params
    and tags given to `later`) goes in the run's next write: a synchronous `log_batch`, the background
    writer, a flush or the close."""

    def __init__(self, client, run_id: str, experiment_id: str, artifact_uri: str | None = None, new: bool = False):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._artifact_uri = artifact_uri
        self._repository: Any = None
        self._pending: list[Any] = []
        self._staged: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
        self._lock = threading.Lock()
        self._writer: _BackgroundWriter | None = None
        self.left_open = False
        # the params the run holds, when this process knows them (a run it created: `new`): log_new_params
        # then needs no read of the store; None for a joined or resumed run until read once
        self._params: set[str] | None = set() if new else None

    def leave_open(self, owner: str) -> None:
        """End this process's part without closing the run: a shared sweep run stays RUNNING while other
        invocations still train its trials, owned by one of them (so `tunelog gc` sees a live owner)."""
        self.set_tags({TAG_OWNER: owner})
        self.left_open = True

    # params and tags are few: logged synchronously so readers see them at once
    def log_params(self, params: Mapping[str, Any]) -> None:
        self.log_batch(params=params)

    def log_new_params(self, params: Mapping[str, Any], others_wrote: bool = False, later: bool = False) -> None:
        """Params the run does not have yet (a resumed run keeps the values it was started with:
        MLflow refuses to change a param). `others_wrote`: another process logged params to this run (a
        script's TunelogCallback), so the store is read even for a run this process created. `later`:
        written with the run's next write."""
        if self._params is None or others_wrote:
            self._params = set(self.client.get_run(self.run_id).data.params)
        with self._lock:  # staged params are the run's too: logged again with another value, MLflow refuses
            known = self._params | set(self._staged[0])
        new = {k: v for k, v in params.items() if k not in known}
        if new and later:
            self.later(params=new)
        elif new:
            self.log_params(new)

    def later(self, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> None:
        """Params and tags that go with the run's next write, within the same trial step: the spec's params
        at a run's start, written with the trainer's first tags."""
        with self._lock:
            self._staged[0].update(params or {})
            self._staged[1].update(tags or {})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.log_batch(tags=tags)

    def log_batch(self, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> None:
        """Params and tags in one write, with whatever waits (staged params and tags, buffered metrics).
        Synchronous, so readers see them at once."""
        self.later(params, tags)
        self._write(self._take())

    def set_outcome(self, outcome: str, reason: str | None = None, alone: bool = False) -> None:
        """The outcome tags, with whatever waits; `alone`: in a write of their own, first (a failing run's
        outcome must reach the store even when its buffered metrics cannot: a full disk)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r}; accepted: {', '.join(OUTCOMES)}")
        tags = {TAG_OUTCOME: outcome, TAG_REASON: reason or ""}
        if alone:
            self._write(_Waiting({}, tags, []))
        else:
            self.set_tags(tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Buffer step metrics; a background writer hands them to the store in batches."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with self._lock:
            self._pending.extend(Metric(k, float(v), now, step or 0) for k, v in metrics.items())
        if self._writer is None:
            self._writer = _BackgroundWriter(self)

    def _take(self) -> _Waiting:
        with self._lock:
            taken = _Waiting(*self._staged, self._pending)
            self._staged, self._pending = ({}, {}), []
        return taken

    def _put_back(self, taken: _Waiting) -> None:
        with self._lock:
            self._pending[:0] = taken.metrics
            self._staged = ({**taken.params, **self._staged[0]}, {**taken.tags, **self._staged[1]})

    def _write(self, taken: _Waiting) -> None:
        from mlflow.entities import Param, RunTag

        params = [Param(k, param_value(v)) for k, v in taken.params.items()]
        tags = [RunTag(k, str(v)) for k, v in taken.tags.items() if v is not None]
        if params or tags or taken.metrics:
            self.client.log_batch(self.run_id, metrics=taken.metrics, params=params, tags=tags, synchronous=True)
        if self._params is not None:
            self._params.update(taken.params)

    def flush(self) -> None:
        """Write everything waiting so far (the writer thread stops; a later log_metrics starts another)."""
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        self._write(self._take())

    def replace_metrics(self, drop: set[str], points: list[tuple[str, float, int]]) -> bool:
        """The history of `drop` (what a console guessed) replaced by `points` (key, value, step: what the
        trainer recorded), after everything waiting is written; False where the store kept the old points
        (tracking.history)."""
        from mlflow.entities import Metric

        from .history import drop_metrics

        self.flush()
        dropped = drop_metrics(self.client, self.run_id, drop)
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(step)) for k, v, step in points]
        for i in range(0, len(metrics), 1000):  # MLflow's log_batch takes at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000], synchronous=True)
        return dropped

    # artifacts go to the run's artifact store directly: MLflow's client reads the whole run (params, tags,
    # metrics) to find where that is, once per run, and this logger knows it from the run's creation
    def _artifacts(self) -> Any:
        if self._repository is None:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            uri = self._artifact_uri or self.client.get_run(self.run_id).info.artifact_uri
            self._repository = get_artifact_repository(uri, tracking_uri=self.client.tracking_uri)
        return self._repository

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self._artifacts().log_artifacts(str(local_dir), artifact_path)

    def log_artifact(self, local_file: str | Path, artifact_path: str | None = None) -> None:
        if Path(local_file).is_dir():  # as MLflow's client does: the folder keeps its name
            name = Path(local_file).name
            self.log_artifacts(local_file, f"{artifact_path}/{name}" if artifact_path else name)
        else:
            self._artifacts().log_artifact(str(local_file), artifact_path)

    @contextmanager
    def _artifact_file(self, artifact_file: str) -> Iterator[Path]:
        """A file to write, logged as `artifact_file` (a run-relative posix path): in place in a local artifact
        store (a temporary folder and a copy were a third of a cheap trial's artifact cost), else a temporary
        file uploaded once written."""
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

        repository = self._artifacts()
        if isinstance(repository, LocalArtifactRepository) and ".." not in artifact_file.split("/"):
            path = Path(repository.artifact_dir, *artifact_file.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            yield path
            return
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp) / name
            self.log_artifact(Path(tmp) / name, folder or None)

    def log_text(self, text: str, artifact_file: str) -> None:
        with self._artifact_file(artifact_file) as path:
            path.write_text(text, encoding="utf-8")

    def log_figure(self, figure, artifact_file: str) -> None:
        with self._artifact_file(artifact_file) as path:
            figure.savefig(path)

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

        try:
            log_datasets(self.client, self.run_id, files)
        except Exception as exc:  # noqa: BLE001 (bookkeeping never decides a run's outcome)
            said = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            print(f"warning: the run's datasets were not recorded: {said}", file=sys.stderr)
            self.client.set_tag(self.run_id, TAG_WARNING, f"datasets not recorded: {said}")

    def system_metrics(self, enabled: bool = True):
        return system_metrics(self, enabled)


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
            taken = self.run._take()
            try:
                self.run._write(taken)
            except Exception:  # keep training; it goes back and the final flush retries (and raises)
                self.run._put_back(taken)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


@contextmanager
def system_metrics(run: RunLogger, enabled: bool = True) -> Iterator[None]:
    """MLflow's system metrics monitor while the body runs, from its first second on; a run shorter than one
    sampling interval gets one closing sample (buffered: it goes in the run's closing write).

    A body shorter than a second (a sweep's cheap trial) gets none, as MLflow's own monitor logs none before
    its first interval: the machine's figures over a fraction of a second describe the machine, not the run,
    and the monitor's setup, thread and eight more metrics were a tenth of such a trial's bookkeeping."""
    if not enabled:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    started: list[Any] = []

    def start() -> None:
        monitor = SystemMetricsMonitor(run.run_id, sampling_interval=SAMPLING_S, tracking_uri=run.client.tracking_uri)
        monitor.start()
        started.append(monitor)

    starter = threading.Timer(MONITOR_AFTER_S, start)
    starter.daemon = True
    starter.start()
    try:
        yield
    finally:
        starter.cancel()
        starter.join()
        for monitor in started:
            monitor.finish()
            if monitor._logging_step == 0:  # shorter than one interval: the figures as the run ends
                monitor.collect_metrics()
                prefix = monitor._metrics_prefix + (f"{monitor.node_id}/" if monitor.node_id else "")
                run.log_metrics({prefix + k: v for k, v in monitor.aggregate_metrics().items()}, step=0)
