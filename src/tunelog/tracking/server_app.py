"""`mlflow server --app-name tunelog`: MLflow's own tracking server (the uvicorn default), its workers set
up for bulk reads.

Why: a search over 10,000 runs builds about 300,000 SQLAlchemy objects inside one request, and with
CPython's default thresholds (700, 10, 10) the collector walks the growing heap again and again while
they are built: more than half of the server's CPU on that request (7.4 CPU-s down to 4.1 measured on
the 2-core CI machine, see bench/changelog_speed.py). Larger thresholds collect the same garbage, less
often. Answers are compact JSON: the same data as MLflow's indented JSON in half the bytes (15 MB, not
33, for 10,000 runs), built by json's C encoder (indentation sends json to its Python one): 3.6 -> 2.9
CPU-s. Each worker opens its store when it starts rather than on its first request (the schema check
and first queries: 1-2 CPU-s a worker, which the first reader after a restart used to wait for). And it
answers one more, read-only route, `/api/2.0/tunelog/runs?experiment_id=ID` (tracking/bulk.py): an
experiment's runs with their params, tags and latest metrics from four plain queries, which tunelog's
readers take instead of the search API (no ORM objects, no protobuf: the bulk of the server's work).
Nothing else differs from `mlflow server`; uvicorn imports this module in every worker.
"""

from __future__ import annotations

import gc
import os
import sys

THRESHOLDS = (50_000, 20, 100)  # young objects before a collection; young, then middle, collections per older one

gc.set_threshold(*THRESHOLDS)

from mlflow.server import BACKEND_STORE_URI_ENV_VAR  # noqa: E402 (after the thresholds: imports build the app)
from mlflow.server.fastapi_app import app  # noqa: E402


def _compact_json() -> str:
    """MLflow's handlers write JSON through `message_to_json` (indented by default); give them the compact
    form of the same function. Left alone where this MLflow's handlers do not use it by that name."""
    from functools import partial

    from mlflow.server import handlers
    from mlflow.utils.proto_json_utils import message_to_json

    if getattr(handlers, "message_to_json", None) is not message_to_json:
        return "json as MLflow writes it"
    handlers.message_to_json = partial(message_to_json, pretty=False)
    return "compact json"


def _open_store() -> str:
    """Open the worker's tracking store and run one small search through it; says what happened. A failure
    here leaves the store to the first request, as in plain `mlflow server`."""
    try:
        from mlflow.entities import ViewType
        from mlflow.server.handlers import _get_tracking_store  # MLflow's own lazy opener, called early

        store = _get_tracking_store()
        experiments = store.search_experiments(max_results=1)
        if experiments:
            store.search_runs([experiments[0].experiment_id], "", ViewType.ACTIVE_ONLY, 1)
        return "store opened"
    except Exception as err:  # noqa: BLE001 (a warm-up: the server must start whatever it meets)
        return f"store left to the first request ({type(err).__name__})"


def _bulk_runs() -> str:
    """Answer `bulk.RUNS_PATH` (one experiment's runs, the four queries readers need) on this worker's SQL
    store: tunelog's readers take it instead of the search API. Not offered on a file store."""
    from flask import Response, request
    from mlflow.server import app as flask_app
    from mlflow.server.handlers import _get_tracking_store

    from .bulk import RUNS_PATH, read_runs, to_json

    def runs() -> Response:
        engine = getattr(_get_tracking_store(), "engine", None)
        experiment_id = request.args.get("experiment_id", "")
        if engine is None:
            return Response('{"error":"not a SQL store"}', status=404, mimetype="application/json")
        if not experiment_id.isdigit():
            return Response('{"error":"experiment_id: a number"}', status=400, mimetype="application/json")
        return Response(to_json(read_runs(engine, experiment_id, "")), mimetype="application/json")

    flask_app.add_url_rule(RUNS_PATH, "tunelog_bulk_runs", runs, methods=["GET"])
    return f"bulk runs at {RUNS_PATH}"


if os.environ.get(BACKEND_STORE_URI_ENV_VAR):  # a server worker (mlflow server's CLI imports this module too)
    print(
        f"tunelog: mlflow server worker, gc thresholds {THRESHOLDS}, {_compact_json()}, {_bulk_runs()}, "
        f"{_open_store()}",
        file=sys.stderr,
        flush=True,
    )

__all__ = ["app"]
