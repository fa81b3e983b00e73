"""The SQLite store file itself: refused in one line when damaged, its tables made by one process at a time,
and a little disk kept in reserve beside it, so a run can still be closed FAILED when its disk fills.

Why here and not in MLflow's hands: MLflow retries a damaged file's engine for minutes, warning each
time, and makes a new store's tables on first use with no lock, so processes started together race.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from ..errors import TunelogError
from .uri import sqlite_path

_DAMAGE = re.compile(r"malformed|not a database|file is encrypted|disk image", re.I)
_FULL = re.compile(r"database or disk is full|no space left on device|disk quota exceeded", re.I)
RESERVE_BYTES = 256 * 1024  # what closing a run takes: its last metrics, outcome tags and status, with room over
closed_on_full_disk: list[str] = []  # runs this process closed FAILED after giving back the reserve


def sqlite_damage(exc: BaseException) -> Optional[str]:
    """SQLite's own words when `exc` (or what caused it) says a database file is damaged (cut short by a
    full disk, overwritten), else None; a locked or busy database is no damage."""
    import sqlite3

    for e in _causes(exc):
        if isinstance(e, sqlite3.DatabaseError) and _DAMAGE.search(str(e)):
            return str(e)
    return None


def check_sqlite_store(uri: str) -> None:
    """A damaged SQLite store file refused in one line before MLflow opens it (MLflow would retry for
    minutes, warning each time): its header is SQLite's and the file is as long as the header says.
    O(1): the first 100 bytes and the file's size, not a scan of the database."""
    if sqlite_path(uri) is None:
        return
    path = sqlite_path(uri)
    if not path.is_file() or path.stat().st_size == 0:
        return  # MLflow makes a new store there
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(100)
    why = None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        why = "not an SQLite database: its header is gone"
    else:
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        pages = int.from_bytes(head[28:32], "big")
        if pages and head[24:28] == head[92:96] and size < pages * page:  # the page count is current
            why = f"cut short: {size:,} of its {pages * page:,} bytes"
    if why:
        raise TunelogError(
            f"the MLflow store {path} is damaged ({why}); nothing was written to it. Restore it from a backup, "
            f"or point MLFLOW_TRACKING_URI at another store"
        )


def create_sqlite_store_once(uri: str) -> None:
    """A new SQLite store's tables made by one process at a time: MLflow creates them on first use, and
    three sweeps started together on a store that does not exist yet raced to it ("table latest_metrics
    already exists"). A file lock beside the store; the others find the tables made and go on."""
    if sqlite_path(uri) is None:
        return
    path = sqlite_path(uri)
    if path.is_file() and path.stat().st_size > 0:
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".init-lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            from .store import client_for

            client_for(uri)  # MLflow's client makes (or finds) every table as it opens the store
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def damaged_store_line(exc: BaseException) -> Optional[str]:
    """One line for a damaged SQLite store, naming the file (the tracking store when it is the damaged
    one), or None when `exc` is about something else."""
    said = sqlite_damage(exc)
    if said is None:
        return None
    from .store import tracking_uri

    uri = tracking_uri()
    path = str(sqlite_path(uri)) if sqlite_path(uri) is not None else None
    where = f"the MLflow store {path}" if path and not _sound(path) else "an SQLite database tunelog uses"
    return (
        f"error: {where} is damaged ({said}); nothing was written to it. Restore it from a backup, or point "
        f"MLFLOW_TRACKING_URI at another store"
    )


def file_store_line(exc: BaseException) -> Optional[str]:
    """One line for an MLflow file store (`./mlruns` of files), which MLflow 3 refuses unless told: how to
    migrate it, or to read it in place; None when `exc` is about something else."""
    if "filesystem tracking backend" not in str(exc):
        return None
    import os

    where = os.environ.get("MLFLOW_TRACKING_URI") or "./mlruns"
    folder = where[len("file:") :] if where.startswith("file:") else where
    parent = os.path.dirname(os.path.abspath(folder.rstrip("/"))) or "."
    return (
        f"error: {where} is an MLflow file store, which MLflow 3 keeps in maintenance mode: migrate it once with "
        f"`mlflow migrate-filestore --source {parent} --target sqlite:///{parent}/mlflow.db` and point "
        f"MLFLOW_TRACKING_URI at the new store, or set MLFLOW_ALLOW_FILE_STORE=true to read it in place"
    )


def _sound(path: str) -> bool:
    """True when SQLite reads the file as a whole database (`PRAGMA quick_check`)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            return con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        return False


def _causes(exc: BaseException) -> Iterator[BaseException]:
    stack, seen = [exc], set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__cause__, e.__context__, getattr(e, "orig", None)]


def disk_full(exc: BaseException) -> Optional[str]:
    """The words of SQLite or the OS when `exc` (or what caused it) says the disk is full, else None."""
    import errno

    for e in _causes(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e.strerror or str(e)
        said = _FULL.search(str(e))
        if said:
            return said.group(0)
    return None


def _reserve(uri: str) -> Optional[Path]:
    db = sqlite_path(uri)
    return db.with_name(db.name + ".tunelog-reserve") if db is not None else None


def keep_reserve(uri: str) -> None:
    """A file of RESERVE_BYTES beside a local SQLite store, made when there is room for it. Why: on a full
    disk SQLite cannot write the run's FAILED status, so the run would read RUNNING for ever; giving this
    space back first lets the close go through (`release_reserve`)."""
    path = _reserve(uri)
    if path is None or not path.parent.is_dir() or (path.is_file() and path.stat().st_size == RESERVE_BYTES):
        return
    try:
        with open(path, "wb") as f:
            f.write(b"\0" * RESERVE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError:  # no room even for that: nothing to keep; the store itself says so on its next write
        path.unlink(missing_ok=True)


def release_reserve(uri: str) -> bool:
    """Give the reserve back to the disk; True when there was one."""
    path = _reserve(uri)
    if path is None or not path.is_file():
        return False
    path.unlink(missing_ok=True)
    return True


def full_disk_line(exc: BaseException) -> Optional[str]:
    """One line for a disk that filled under the store, naming the file and what was closed; else None."""
    said = disk_full(exc)
    if said is None:
        return None
    from .store import tracking_uri

    uri = tracking_uri()
    where = str(sqlite_path(uri) or "tunelog's files")
    closed = (
        f"run {', '.join(closed_on_full_disk)} closed FAILED"
        if closed_on_full_disk
        else "a run left open is closed by `tunelog gc` once there is room"
    )
    return f"error: the disk holding {where} is full ({said}); {closed}. Free space there (or point MLFLOW_TRACKING_URI at another disk) and rerun"
