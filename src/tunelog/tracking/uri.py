"""What kind of store a tracking URI names, decided here once: a local SQLite file, another database,
a tracking server, or something else MLflow knows. Every path that branches on the store asks here."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

_SQLITE = "sqlite:///"
_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")


def sqlite_path(uri: str) -> Optional[Path]:
    """The file of a `sqlite:///PATH` store (relative PATHs as written), else None."""
    return Path(uri[len(_SQLITE) :]) if uri.startswith(_SQLITE) else None


def is_sqlite(uri: str) -> bool:
    """Any SQLite store (`sqlite:///rel.db`, `sqlite:////abs.db`, `sqlite://` in memory)."""
    return uri.startswith("sqlite:")


def is_server(uri: str) -> bool:
    """A tracking server (`http(s)://`): read through its REST API."""
    return uri.startswith(("http://", "https://"))


def is_database(uri: str) -> bool:
    """A database MLflow opens itself (`postgresql+psycopg://...`): its tables can be read in bulk."""
    return uri.split(":", 1)[0].split("+")[0] in _DATABASES


def browsable_with_mlflow_ui(uri: str) -> bool:
    """A store `mlflow ui --backend-store-uri` opens (a server is opened in a browser instead)."""
    return "://" in uri and not is_server(uri)
