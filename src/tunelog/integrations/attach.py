"""How a user's script with `TunelogCallback` and the command trainer that runs it speak to each other.

The command trainer opens the run and hands it to the script through the environment
(`TUNELOG_RUN_ID`, `MLFLOW_TRACKING_URI`, and `TUNELOG_STOP_FILE`: where it writes when the sweep's
pruner says stop). The callback writes the run's metrics itself and prints a few protocol lines the
trainer reads: that it is attached (the trainer then stops logging what it parses from stdout), each
eval's values (the pruner judges them), and how training ended. A stop file rather than a signal: the
script ends its step, its `Trainer` ends cleanly, and nothing is killed mid-write.
"""

from __future__ import annotations

import json
from typing import Optional

ENV_RUN_ID = "TUNELOG_RUN_ID"
ENV_STOP_FILE = "TUNELOG_STOP_FILE"
ENV_CALLBACK = "TUNELOG_CALLBACK"  # "off": a probe candidate, timed from stdout, opens no run
PREFIX = "tunelog-callback: "
STOP_FILE = ".tunelog-stop"  # in the command's output folder


def attached_line(run_id: str) -> str:
    return f"{PREFIX}attached {run_id}"


def eval_line(step: int, metrics: dict[str, float]) -> str:
    return f"{PREFIX}eval {json.dumps({'step': step, 'metrics': metrics}, allow_nan=True)}"


def outcome_line(outcome: str, reason: str) -> str:
    return f"{PREFIX}outcome {json.dumps({'outcome': outcome, 'reason': reason})}"


def parse(line: str) -> Optional[tuple[str, object]]:
    """('attached', run id) | ('eval', (step, metrics)) | ('outcome', (outcome, reason)) | None."""
    if not line.startswith(PREFIX):
        return None
    kind, _, body = line[len(PREFIX) :].strip().partition(" ")
    try:
        if kind == "attached":
            return kind, body
        data = json.loads(body)
        if kind == "eval":
            return kind, (int(data["step"]), {str(k): float(v) for k, v in data["metrics"].items()})
        if kind == "outcome":
            return kind, (str(data["outcome"]), str(data["reason"]))
    except (ValueError, KeyError, TypeError):
        return None
    return None
