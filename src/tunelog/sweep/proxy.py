"""Optuna's gRPC storage proxy: many sweep workers on one study database without a connection each.

Why: every worker process that opens `postgresql://` directly holds its own SQLAlchemy pool, so the
database's `max_connections` (100 by default) caps the workers long before the GPUs run out. Optuna's
proxy (`run_grpc_proxy_server`, experimental since Optuna 4.2) holds the one pool and a cache; workers open
`grpc://HOST:PORT` (`GrpcStorageProxy`) and hold no database connection. `tunelog study-server` runs it
over the real RDB, through `get_storage` (its cache), as Optuna advises.

Heartbeats do not cross the proxy (`record_heartbeat` is the RDB storage's own): `sweep/heartbeat.py` writes
the trial's `tunelog.beat` user attribute instead.
"""

from __future__ import annotations

import warnings
from urllib.parse import urlsplit

import optuna

from ..errors import TunelogError
from ..util.redact import redact_url

SCHEME = "grpc://"
DEFAULT_PORT = 13000  # Optuna's own default

# "experimental since 4.2": said on every open, in every worker; this module's docstring says it once
warnings.filterwarnings(
    "ignore", message=r".*(GrpcStorageProxy|run_grpc_proxy_server)", category=optuna.exceptions.ExperimentalWarning
)


def is_proxy_url(url: str) -> bool:
    return url.startswith(SCHEME)


def open_proxy(url: str) -> optuna.storages.BaseStorage:
    """`grpc://HOST:PORT` as a storage, asked once so that a proxy that is not there is one line now."""
    host, port = _address(url)
    storage = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        storage.get_all_studies()
    except Exception as exc:  # grpc's RpcError: UNAVAILABLE, a refused connection, a wrong port
        raise TunelogError(
            f"--storage {url}: no study server answers there ({_said(exc)[:160]}); start one with "
            f"`tunelog study-server --storage postgresql://... --host {host} --port {port}`"
        ) from None
    return storage


def rpc_line(exc: BaseException) -> "str | None":
    """A study server's failure met mid-sweep (gRPC's RpcError, whose text is a dozen lines) as one line."""
    if type(exc).__module__.split(".")[0] != "grpc" or not callable(getattr(exc, "details", None)):
        return None
    code = getattr(exc, "code", lambda: None)()
    return f"error: the study server failed ({getattr(code, 'name', code)}): {_said(exc)[:240]}"


def _said(exc: BaseException) -> str:
    """What a gRPC error says (its `details()`, on one line), else its text, else its type."""
    details = getattr(exc, "details", None)
    said = details() if callable(details) else str(exc)
    return " ".join(str(said or "").split()) or type(exc).__name__


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = -1
    if not parts.hostname or not 0 < port < 65536 or parts.path not in ("", "/"):
        raise TunelogError(f"--storage {url}: accepted: grpc://HOST:PORT (a `tunelog study-server`)")
    return parts.hostname, port


def servable(storage_url: str) -> None:
    """Only a database sits behind the proxy: not a journal file (Optuna's proxy serves RDB storages only,
    optuna#6084), nor another proxy."""
    if "://" not in storage_url or is_proxy_url(storage_url):
        raise TunelogError(
            f"--storage {redact_url(storage_url)}: the study server serves a database (postgresql://..., "
            f"mysql://..., sqlite:///...); Optuna's gRPC proxy does not serve a journal file (optuna#6084)"
        )


def serve(storage: optuna.storages.BaseStorage, label: str, host: str, port: int, connections: int) -> None:
    """Runs Optuna's proxy over the opened RDB `storage` (at most `connections` database connections, which its
    request threads queue for: the database's limit is the point) until interrupted."""
    cached = optuna.storages.get_storage(storage)  # its cache, as Optuna advises
    print(f"study server: {redact_url(label)} on grpc://{host}:{port}, {connections} database connections "
          f"(Ctrl-C stops it)", flush=True)  # fmt: skip
    optuna.storages.run_grpc_proxy_server(cached, host=host, port=port)
