"""The one judge of how a run ended: log text, exit code, progress, the trainer's own record.

The command trainer (a script it ran), every import reader (a folder on disk) and the callback (a
Trainer it watched) describe what they saw as `Evidence` and call `judge`: one ladder, one list of
out-of-memory words, so a log line is judged the same whichever path wrote the run.

Why words and not only values: a script that prints `WARNING loss is nan at batch 12000` and
then keeps logging finite eval numbers diverged, though no parsed metric is NaN; a log whose
last step is 3,000 of a configured 12,000 was cut off, though it reached a result. Import and
the command trainer both ask here, so a run is judged the same way whichever path wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from ..vocabulary import Outcome
from .parse import ParsedLog, has_nonfinite

_NONFINITE = r"[-+]?(?:nan|inf(?:inity|inite)?)\b"
# `loss is nan`, `loss became inf`, `Loss: nan`, `loss=NaN`, `nan loss`, `inf loss detected`
NONFINITE_WORDS = re.compile(
    rf"(?i)\bloss\b(?:\s+(?:is|was|became|becomes|went|of))?\s*[:=]?\s*(?:to\s+)?{_NONFINITE}|\b{_NONFINITE}\s+loss\b"
)
# what CUDA, cuBLAS, PyTorch and the C++ runtime print when memory runs out (the one list)
OOM_WORDS = re.compile(r"(?i)out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|std::bad_alloc")
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
    if steps and max_step is not None:  # a length in steps wins over epochs (the Trainer's max_steps does)
        return f"log ends at step {max_step} of {steps[0]}={steps[1]:g}" if max_step < COMPLETE * steps[1] else None
    epochs = _configured(params, EPOCH_KEYS)
    if epochs and last_epoch is not None and last_epoch < COMPLETE * epochs[1]:
        return f"log ends at epoch {last_epoch:g} of {epochs[0]}={epochs[1]:g}"
    return None


_TRACEBACK = "Traceback (most recent call last)"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
# an exception's line, `error: ...`, or argparse's `prog.py: error: ...` (a flag the script refuses)
_ERROR_LINE = re.compile(
    r"^\s*(?:[\w.]+(?:Error|Exception|Interrupt)\b|error:|Error:|FAILED\b|RuntimeError|[\w./-]+: error: )"
)


def ends_in_traceback(lines: Sequence[str]) -> Optional[str]:
    """The exception line (`ValueError: bad lr`) when the text ends in a Python traceback, else None.

    A traceback early in a log (a failed Optuna trial, a retried download) followed by more of the
    run's own lines does not end the run; only one the log ends in does. After the exception line
    only blank lines, chained tracebacks and a launcher's few closing lines may follow.
    """
    start = next((i for i in range(len(lines) - 1, -1, -1) if _TRACEBACK in lines[i]), None)
    if start is None:
        return None
    exception, after = None, 0
    for line in lines[start + 1 :]:
        text = line.rstrip()
        if not text.strip() or any(c in text for c in _CHAINED):
            continue
        if exception is None:
            if not text[:1].isspace() and not text.startswith("^"):
                exception = text.strip()
            continue
        after += 1
    return exception if exception is not None and after <= 3 else None


def last_error_line(lines: Sequence[str]) -> Optional[str]:
    """The line that says why a script failed: a final traceback's exception, else the last line that
    reads like an error (`error: ...`, `RuntimeError ...`); None when nothing does."""
    said = ends_in_traceback(lines)
    if said:
        return said[:300]
    return next((line.strip()[:300] for line in reversed(lines) if _ERROR_LINE.match(line)), None)


@dataclass(frozen=True)
class Evidence:
    """What one path saw of a run's end. Every field is optional: a reader fills what its layout has.

    `lines`: the log (all of it, or a bounded tail plus any out-of-memory line seen before the tail);
    `exit_code`: None when no process was watched (an imported folder); `params`: the configured
    length (max_steps, epochs, ...); `max_step`/`last_epoch`: how far the log says it got; `epoch_base`:
    1 when epochs are counted from 0 (Lightning's `epoch` column), so epoch 0 of 1 is the whole run;
    `nonfinite`: a parsed non-finite loss, said as `key=value at step N`; `progress`: a bar's last
    (N, M); `trainer_steps`: a live Trainer's own (global_step, max_steps); `saved`: whether the layout's final-save line was seen (None: the layout has none);
    `trainer_finished`: the trainer's own record (a trainer_state at max_steps) that outranks log text;
    `record`: a reader's own finding (a trainer_state stopped short), taken when nothing worse is seen.
    """

    lines: Sequence[str] = ()
    exit_code: Optional[int] = None
    params: Mapping[str, Any] = field(default_factory=dict)
    max_step: Optional[int] = None
    last_epoch: Optional[float] = None
    epoch_base: int = 0
    nonfinite: Optional[str] = None
    progress: Optional[tuple[int, int]] = None
    trainer_steps: Optional[tuple[int, int]] = None
    saved: Optional[bool] = None
    trainer_finished: Optional[bool] = None
    record: Optional[tuple[str, str]] = None
    where: str = "the log"


def judge(e: Evidence) -> tuple[Outcome, str]:
    """(outcome, reason): oom, diverged, failed, incomplete or ok, worst evidence first."""
    oom = next((line.strip() for line in e.lines if OOM_WORDS.search(line)), None)
    if oom is not None:
        return Outcome.OOM, _clip(oom) or f"out of memory in {e.where}"
    said = first_nonfinite_line(e.lines)
    if said:
        return Outcome.DIVERGED, f"log says {said[:120]}"
    if e.nonfinite:
        return Outcome.DIVERGED, e.nonfinite
    if e.exit_code not in (None, 0):
        line = last_error_line(e.lines)
        return Outcome.FAILED, f"exit code {e.exit_code}" + (f": {line}" if line else "")
    if e.trainer_finished is not True and (exception := ends_in_traceback(e.lines)):
        return Outcome.FAILED, f"{e.where} ends in a traceback: {exception[:200]}"
    if e.record is not None:
        return Outcome(e.record[0]), e.record[1]
    if e.trainer_steps and e.trainer_steps[1] and e.trainer_steps[0] < COMPLETE * e.trainer_steps[1]:
        return Outcome.INCOMPLETE, f"stopped at step {e.trainer_steps[0]} of {e.trainer_steps[1]}"
    if e.progress and e.progress[0] < COMPLETE * e.progress[1]:
        return Outcome.INCOMPLETE, f"progress bar ends at step {e.progress[0]} of {e.progress[1]}"
    last_epoch = None if e.last_epoch is None else e.last_epoch + e.epoch_base
    cut = truncation(e.params, e.max_step, last_epoch)
    if cut:
        return Outcome.INCOMPLETE, cut
    if e.progress and e.saved is False:
        return Outcome.INCOMPLETE, f"no final save (`model saved.`) in {e.where}"
    return Outcome.OK, ""


def _clip(line: str) -> str:
    return _STAMP.sub("", line)[:300]


def judge_log(text: str, log: ParsedLog, params: Mapping[str, Any]) -> tuple[Outcome, str]:
    """A finished log with its parsed numbers, judged (the generic config-plus-log reader)."""
    nonfinite = "non-finite loss in the log" if has_nonfinite(log) else None
    evidence = Evidence(
        lines=text.splitlines(),
        params=params,
        max_step=log.max_step,
        last_epoch=_last(log, "epoch"),
        nonfinite=nonfinite,
    )
    return judge(evidence)
