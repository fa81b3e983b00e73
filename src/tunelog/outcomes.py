"""What a training log says about how its run ended, beyond the numbers it parsed.

Why words and not only values: a script that prints `WARNING loss is nan at batch 12000` and
then keeps logging finite eval numbers diverged, though no parsed metric is NaN; a log whose
last step is 3,000 of a configured 12,000 was cut off, though it reached a result. Import and
the command trainer both ask here, so a run is judged the same way whichever path wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from .logparse import ParsedLog, has_nonfinite

_NONFINITE = r"[-+]?(?:nan|inf(?:inity|inite)?)\b"
# `loss is nan`, `loss became inf`, `Loss: nan`, `loss=NaN`, `nan loss`, `inf loss detected`
NONFINITE_WORDS = re.compile(
    rf"(?i)\bloss\b(?:\s+(?:is|was|became|becomes|went|of))?\s*[:=]?\s*(?:to\s+)?{_NONFINITE}|\b{_NONFINITE}\s+loss\b"
)
OOM_WORDS = re.compile(r"(?i)out of memory|OutOfMemoryError")
# configured lengths, by the last part of a (dotted) param name, lower-cased
STEP_KEYS = (
    "max_steps",
    "max_train_steps",
    "nbatch",
    "n_batch",
    "num_steps",
    "total_steps",
    "train_steps",
    "max_iters",
    "num_iterations",
)
EPOCH_KEYS = ("epochs", "max_train_epochs", "num_epochs", "num_train_epochs", "max_epochs", "n_epochs", "nepoch")
COMPLETE = 0.9  # a last step below 90% of the configured steps is a run that ended early


def nonfinite_line(line: str) -> bool:
    """True when the line says in words that the loss is NaN or infinite."""
    return bool(NONFINITE_WORDS.search(line))


_STAMP = re.compile(r"^\[?\d{4}-\d{2}-\d{2}[ T][\d:.,]+\]?\s*(?:[A-Z]+\s+)?")


def first_nonfinite_line(lines: Iterable[str]) -> Optional[str]:
    """The first line saying the loss is NaN/inf, without its timestamp and level (`WARNING`)."""
    return next((_STAMP.sub("", line.strip()) for line in lines if nonfinite_line(line)), None)


def _configured(params: Mapping[str, Any], keys: tuple[str, ...]) -> Optional[tuple[str, float]]:
    for name, value in params.items():
        if name.rsplit(".", 1)[-1].lower() in keys:
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if number > 0:
                return name, number
    return None


def _last(log: ParsedLog, key: str) -> Optional[float]:
    return next((value for k, value, _, _ in reversed(log.series) if k == key), None)


def truncation(params: Mapping[str, Any], max_step: Optional[int], last_epoch: Optional[float]) -> Optional[str]:
    """Why a log looks cut off before its configured length, or None.

    Steps: the largest step the log named (only explicit steps count, not line counters) against
    `max_steps`/`nBatch`/...; epochs: the last `epoch` value logged against `epochs`/...
    """
    steps = _configured(params, STEP_KEYS)
    if steps and max_step is not None and max_step < COMPLETE * steps[1]:
        return f"log ends at step {max_step} of {steps[0]}={steps[1]:g}"
    epochs = _configured(params, EPOCH_KEYS)
    if epochs and last_epoch is not None and last_epoch < COMPLETE * epochs[1]:
        return f"log ends at epoch {last_epoch:g} of {epochs[0]}={epochs[1]:g}"
    return None


def judge_log(text: str, log: ParsedLog, params: Mapping[str, Any]) -> tuple[str, str]:
    """(outcome, reason) of a finished log: oom, diverged, failed, incomplete or ok."""
    lowered = text.lower()
    if OOM_WORDS.search(text):
        return "oom", "out of memory in the log"
    said = first_nonfinite_line(text.splitlines())
    if said:
        return "diverged", f"log says {said[:120]}"
    if has_nonfinite(log):
        return "diverged", "non-finite loss in the log"
    if "traceback (most recent call last)" in lowered:
        return "failed", "the log ends in a traceback"
    cut = truncation(params, log.max_step, _last(log, "epoch"))
    if cut:
        return "incomplete", cut
    return "ok", ""
