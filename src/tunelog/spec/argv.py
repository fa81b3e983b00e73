"""A command trainer's argv as the spec writes it: where a shell script sits in it, and placeholders a
shell would read inside the user's own quotes (refused at load: there a value's quoting would end the
user's quote, and `$(...)` given by `--set` would run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.]*)\}")
SHELLS = {"sh", "bash", "dash", "zsh", "ksh"}


def shell_script_index(argv: list[str]) -> int:
    """Where a shell's script sits in an argv (`bash -c S`, `bash -ec S`, `sh -e -o pipefail -c S`,
    `/usr/bin/env [VAR=x] bash -c S`), or -1 when the argv starts no shell script: placeholders there are
    shell-quoted, since a shell reads that item as code."""
    i = 0
    if i < len(argv) and Path(argv[i]).name == "env":
        i += 1
        while i < len(argv) and ("=" in argv[i] or argv[i].startswith("-")):
            i += 1
    if i >= len(argv) or Path(argv[i]).name not in SHELLS:
        return -1
    i, has_c = i + 1, False
    while i < len(argv) and argv[i][:1] in ("-", "+") and argv[i] != "--":
        if argv[i] in ("-o", "+o", "-O", "+O"):
            i += 1  # takes the option's name
        elif argv[i][:1] == "-" and not argv[i].startswith("--") and "c" in argv[i][1:]:
            has_c = True
        i += 1
    return i if has_c and i < len(argv) else -1


def quoted_placeholder(script: str) -> Optional[str]:
    """The first `{name}` written inside the script's own quotes ('...' or "..."), else None."""
    quote: Optional[str] = None
    i = 0
    while i < len(script):
        c = script[i]
        if quote is None and c == "\\":
            i += 2
            continue
        if c in ("'", '"') and (quote is None or quote == c):
            quote = None if quote == c else c
        elif quote is not None and (m := PLACEHOLDER.match(script, i)):
            return m.group(0)
        i += 1
    return None
