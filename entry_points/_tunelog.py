"""Shared by the entry-point scripts: run the tunelog CLI, from the checkout's src/ if it is not installed.

MLflow's conda environment installs the dependencies, not this package, so the
scripts must find `src/tunelog` by path.
"""

from __future__ import annotations

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


SPEC_DECIDES = "spec"


def drop_empty_options(argv: list[str]) -> list[str]:
    """MLproject passes an empty optional parameter as `--flag ''` (or `--flag spec`, a default that reads as
    "the spec's own value" in the run's params): drop the pair so the default applies."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("--") and i + 1 < len(argv) and argv[i + 1] in ("", SPEC_DECIDES):
            skip = True
            continue
        out.append(arg)
    return out


def as_flag(argv: list[str], flag: str) -> list[str]:
    """MLproject params are strings: `--quick true` becomes the flag `--quick`, `--quick false` nothing."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == flag:
            value = next(it, "false")
            if value.strip().lower() in ("1", "true", "yes", "on"):
                out.append(flag)
        else:
            out.append(arg)
    return out


def run(verb: str, argv: list[str], flags: tuple[str, ...] = ()) -> None:
    from tunelog.cli import main

    for flag in flags:
        argv = as_flag(argv, flag)
    main([verb, *drop_empty_options(argv)])
