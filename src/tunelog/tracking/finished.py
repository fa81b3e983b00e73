"""Finished runs written in one go with their own times: what `import` makes of run folders.

On a SQL store many at once through MLflow's own table models, in one transaction (`write_finished`);
elsewhere, or where that fails, run by run through the client, each closed whatever happens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .contract import TAG_BASED_ON, TAG_RUN_NAME
from .logger import param_value


@dataclass
class FinishedRun:
    """A run written in one go with its own times (an imported folder); metrics as (key, value, ms, step).
    `run_id` is chosen by the writer, so runs written together can name each other (`tunelog.based_on`)."""

    run_id: str
    name: str
    start_ms: int
    end_ms: int
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[tuple[str, float, int, int]]


def write_finished(store: Any, experiment_id: str, runs: list[FinishedRun]) -> None:
    """Finished runs inserted through MLflow's own table models in one transaction, as its `create_run`,
    `log_batch` and `set_terminated` would leave them (latest metric: the largest step, then time, then
    value; NaN as `is_nan`).

    Why: MLflow's per-run writes are three transactions and a read-modify-write of the latest metrics per
    batch, about 70 ms a run on SQLite; importing 1,000 folders took over a minute. Names are checked by
    MLflow's validators first; any error rolls the whole batch back (the caller then writes run by run).
    A test holds a run written here equal, through MLflow's API, to the same run written by the client."""
    from mlflow.entities import LifecycleStage, SourceType
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.uri import append_to_uri_path
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name, _validate_tag_name

    artifacts = store.get_experiment(experiment_id).artifact_location
    rows: list[Any] = []
    points: list[dict[str, Any]] = []  # metric history: inserted in bulk (an ORM object each cost 80 us)
    for run in runs:
        tags = {TAG_RUN_NAME: run.name, **run.tags}
        for key in run.params:
            _validate_param_name(key)
        for key in tags:
            _validate_tag_name(key)
        sql_run = SqlRun(
            name=run.name,
            artifact_uri=append_to_uri_path(artifacts, run.run_id, "artifacts"),
            run_uuid=run.run_id,
            experiment_id=int(experiment_id),
            source_type=SourceType.to_string(SourceType.UNKNOWN),
            source_name="",
            entry_point_name="",
            user_id="",
            status=run.status,
            start_time=run.start_ms,
            end_time=run.end_ms,
            deleted_time=None,
            source_version="",
            lifecycle_stage=LifecycleStage.ACTIVE,
        )
        rows.append(sql_run)
        rows += [SqlTag(key=k, value=v[:8000], run_uuid=run.run_id) for k, v in tags.items()]
        rows += [SqlParam(key=k, value=v, run_uuid=run.run_id) for k, v in run.params.items()]
        latest: dict[str, tuple] = {}
        for key, value, ms, step in dict.fromkeys(run.metrics):  # MLflow drops exact duplicates too
            _validate_metric_name(key)
            is_nan, stored = store.sanitize_metric_value(float(value))
            points.append(
                {"run_uuid": run.run_id, "key": key, "value": stored, "timestamp": ms, "step": step, "is_nan": is_nan}
            )
            order = (step, ms, stored)
            if key not in latest or order > latest[key][0]:
                latest[key] = (order, is_nan)
        rows += [
            SqlLatestMetric(run_uuid=run.run_id, key=k, value=o[2], timestamp=o[1], step=o[0], is_nan=nan)
            for k, (o, nan) in latest.items()
        ]
    with store.ManagedSessionMaker(read_only=False) as session:
        session.add_all(rows)
        session.flush()  # the runs exist before their points
        for i in range(0, len(points), 10_000):
            session.execute(SqlMetric.__table__.insert(), points[i : i + 10_000])


class FinishedRuns:
    """The import half of `Tracker`: needs `self.client` and `self.experiment_id`."""

    client: Any
    experiment_id: Any

    def create_finished_run(
        self,
        experiment: str,
        run_name: str,
        start_ms: int,
        end_ms: int,
        status: str,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
        metrics: list[tuple[str, float, int, int]],
    ) -> str:
        """A run written in one go with its own times (an imported legacy run); metrics as (key, value, ms, step)."""
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(self.experiment_id(experiment), start_time=start_ms, run_name=run_name)
        try:
            self.client.log_batch(
                run.info.run_id,
                params=[Param(k, param_value(v)) for k, v in params.items()],
                tags=[RunTag(k, str(v)) for k, v in tags.items() if v is not None],
                metrics=[Metric(k, v, ts, step) for k, v, ts, step in metrics],
                synchronous=True,
            )
        except BaseException:  # the store refused a value: the run is closed, never left RUNNING
            self.client.set_terminated(run.info.run_id, status="FAILED", end_time=end_ms)
            raise
        self.client.set_terminated(run.info.run_id, status=status, end_time=end_ms)
        return run.info.run_id

    def create_finished_runs(self, experiment: str, runs: list[FinishedRun]) -> tuple[dict[str, str], dict[str, str]]:
        """Many finished runs at once (an import): one transaction on a SQL store (`write_finished`),
        else, or where that fails, run by run, with `tunelog.based_on` links moved to the ids MLflow gave.
        Returns (written: given run id -> stored run id, refused: given run id -> why)."""
        experiment_id = self.experiment_id(experiment)
        store = getattr(self.client._tracking_client, "store", None)
        if runs and type(store).__name__ == "SqlAlchemyStore":
            try:
                write_finished(store, experiment_id, runs)
                return {r.run_id: r.run_id for r in runs}, {}
            except Exception:  # a value MLflow refuses or a schema this code does not know: the supported road
                pass
        written: dict[str, str] = {}
        refused: dict[str, str] = {}
        for run in runs:
            tags = {k: written.get(v, v) if k == TAG_BASED_ON else v for k, v in run.tags.items()}
            try:
                written[run.run_id] = self.create_finished_run(
                    experiment, run.name, run.start_ms, run.end_ms, run.status, run.params, tags, run.metrics
                )
            except Exception as exc:  # closed FAILED by create_finished_run; the others go on
                refused[run.run_id] = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        return written, refused
