"""The `tunelog` command: thin click commands over library calls.

Errors from the TunelogError family print one line (or one per spec problem)
and exit with their class's code; a user mistake never prints a traceback.
"""

from __future__ import annotations

import sys
from typing import Optional

import click

from ..errors import TunelogError
from . import checks, history, training  # noqa: F401  (each registers its verbs on the group)
from .app import cli

INTERRUPTED = (
    "interrupted: open runs closed KILLED (outcome interrupted); run the same command again to resume a sweep "
    "or stages (an interrupted trial runs again)"
)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: maps the TunelogError family to one line and its exit code."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:  # click's word for Ctrl-C
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TunelogError as exc:
        click.echo(f"error: {exc}" if exc.exit_code != 2 else str(exc), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except Exception as exc:  # a full or damaged SQLite store, an old file store, a study server that failed: one line
        from ..sweep.proxy import rpc_line
        from ..tracking.sqlite_file import damaged_store_line, file_store_line, full_disk_line

        line = full_disk_line(exc) or damaged_store_line(exc) or file_store_line(exc) or rpc_line(exc)
        if line is None:
            raise
        click.echo(line, err=True)
        sys.exit(1)


__all__ = ["cli", "main"]
