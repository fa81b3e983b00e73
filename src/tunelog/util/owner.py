"""Which process owns a trial or a run (`host:pid`), and whether that process still lives.

A sweep that resumes and `tunelog gc` both need to tell a run that is still training
from one whose process was killed: the owner is recorded when the work starts.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def owner_tag() -> str:
    """This process, as recorded on what it starts."""
    return f"{socket.gethostname()}:{os.getpid()}"


def on_this_host(owner: str) -> bool:
    """Whether an owner tag (host:pid) names a process of this machine: only then can its life be checked."""
    return str(owner or "").rpartition(":")[0] == socket.gethostname()


def owner_dead(owner: str) -> bool:
    """True only when the owner is on this host and its process is gone; False when alive or unknowable."""
    pid = str(owner or "").rpartition(":")[2]
    return on_this_host(owner) and pid.isdigit() and not pid_alive(int(pid))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True
