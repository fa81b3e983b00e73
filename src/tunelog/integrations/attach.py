"""How a user's script with `TunelogCallback` and the command trainer that runs it speak to each other.

The command trainer opens the run and hands it to the script through the environment: `TUNELOG_RUN_ID`,
`TUNELOG_TRACKING_URI` (the script's own `MLFLOW_TRACKING_URI` points at a scratch store: tunelog records
the run, HF's MLflowCallback writes where nobody reads), `TUNELOG_STOP_FILE` (where it writes when the sweep's pruner says stop) and
`TUNELOG_EVENTS`, a file of JSON lines that is the two's own channel. The callback writes the run's
metrics itself and appends events there: that it is attached (the trainer then stops logging what it
parses from stdout), each eval's values (the pruner judges them), and how training ended.

Why a file and not stdout: a script's stdout is shared by tqdm (which leaves the cursor mid-line and
prefixes the next line with its escape codes), rich, warnings and the user's own prints; in-process
reporting (Optuna's `trial.report`, Ray's `session.report`) never depends on it, and neither does this.
A stop file rather than a signal: the script ends its step, its `Trainer` ends cleanly, nothing is
killed mid-write.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

ENV_RUN_ID = "TUNELOG_RUN_ID"
ENV_STOP_FILE = "TUNELOG_STOP_FILE"
ENV_EVENTS = "TUNELOG_EVENTS"
ENV_TRACKING_URI = "TUNELOG_TRACKING_URI"  # the store the run is in (MLFLOW_TRACKING_URI is the script's own)
ENV_CALLBACK = "TUNELOG_CALLBACK"  # "off": a probe candidate, timed from stdout, opens no run
STOP_FILE = ".tunelog-stop"  # in the command's output folder
EVENTS_FILE = ".tunelog-events.jsonl"  # in the command's output folder

Event = tuple[str, object]  # ('attached', run id) | ('eval', (step, metrics)) | ('outcome', (outcome, reason))


def main_process() -> bool:
    """Rank 0 of a `torchrun`/`accelerate` launch (or a single process): the one that records."""
    return os.environ.get("RANK", "0") == "0"


def emit(kind: str, **payload: object) -> None:
    """One event appended to the command trainer's file (a no-op where no command trainer listens).
    One short `write` of a line opened for appending: the reader never sees half of one."""
    path = os.environ.get(ENV_EVENTS)
    if not path or os.environ.get(ENV_CALLBACK) == "off":
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": kind, **payload}, allow_nan=True) + "\n")


def attached(run_id: str) -> None:
    emit("attached", run_id=run_id)


def evaluated(step: int, metrics: dict[str, float]) -> None:
    emit("eval", step=step, metrics=metrics)


def ended(outcome: str, reason: str) -> None:
    emit("outcome", outcome=str(outcome), reason=reason)


class Events:
    """The command trainer's side: the events appended to the file since the last look."""

    def __init__(self, path: Path):
        self.path, self._offset, self._partial = path, 0, b""

    def new(self) -> list[Event]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [event for line in lines if (event := parse(line.decode("utf-8", "replace"))) is not None]


def parse(line: str) -> Optional[Event]:
    """One line of the events file as an event; None for anything else."""
    try:
        data = json.loads(line)
        kind = data["kind"]
        if kind == "attached":
            return kind, str(data["run_id"])
        if kind == "eval":
            return kind, (int(data["step"]), {str(k): float(v) for k, v in data["metrics"].items()})
        if kind == "outcome":
            return kind, (str(data["outcome"]), str(data["reason"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None
