"""`mlflow server --app-name tunelog`: MLflow's own tracking server (the uvicorn default), its workers'
garbage collector set for bulk reads.

Why: a search over 10,000 runs builds about 300,000 SQLAlchemy objects inside one request, and with
CPython's default thresholds (700, 10, 10) the collector walks the growing heap again and again while
they are built: more than half of the server's CPU on that request (7.4 CPU-s down to 4.1 measured on
the 2-core CI machine, see bench/changelog_speed.py). Larger thresholds collect the same garbage, less
often. Nothing else differs from `mlflow server`; uvicorn imports this module in every worker.
"""

from __future__ import annotations

import gc
import sys

THRESHOLDS = (50_000, 20, 100)  # young objects before a collection; young, then middle, collections per older one

gc.set_threshold(*THRESHOLDS)
print(f"tunelog: mlflow server with gc thresholds {THRESHOLDS} (bulk reads)", file=sys.stderr, flush=True)

from mlflow.server.fastapi_app import app  # noqa: E402 (after the thresholds: the import builds the app)

__all__ = ["app"]
