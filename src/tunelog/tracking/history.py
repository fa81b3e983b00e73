"""A run's metric history replaced by a better source: the trainer's own record over the console's guesses.

Why: while a command trainer's script runs, its console is all there is (values rounded to the digits it
prints, steps read off the lines); when it ends, its output folder holds the same series at full precision.
MLflow's API cannot delete a metric, so on a SQL store the console's rows of the keys the record covers are
deleted through MLflow's own table models before the record's points are written; on any other store (a
server) the record's points are written after them, so each key's latest value is the record's, and the
console's points stay in the history beside them (said by the return value).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def drop_metrics(client: Any, run_id: str, keys: Iterable[str]) -> bool:
    """Deletes every point (history and latest value) of `keys` in the run; False where the store cannot."""
    keys = sorted(set(keys))
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if not keys or type(store).__name__ != "SqlAlchemyStore":
        return not keys
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

    with store.ManagedSessionMaker() as session:
        for model in (SqlMetric, SqlLatestMetric):
            session.query(model).filter(model.run_uuid == run_id, model.key.in_(keys)).delete(synchronize_session=False)
    return True
