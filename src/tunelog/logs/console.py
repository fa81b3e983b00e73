"""A training CLI's console as it really comes: what is chatter, and at which step a metric line is.

A Trainer-based CLI (LLaMA-Factory, TRL's scripts, run_clm) prints its log dicts between tqdm redraws,
so the bar's `N/M` is on another line than the dict, and often a redraw behind it; its start-up prints
`[INFO|trainer.py:2668]`, a model config dump (`"rms_norm_eps": 1e-06,`) and `Num Epochs = 2`, none of
them metrics. Why one place: the command trainer's live parse, the probe's step timing and `import` of a
saved console all ask these two questions, and must get one answer.

The step of a dict line is, in order: a step the line names itself (`N/M [` on the same line, `step 10`);
the dict's `epoch` times the Trainer's own "Num update steps per epoch" (exact to the rounding of the
printed epoch); else the bar's last counter. Never a count of lines.
"""

from __future__ import annotations

import re
from typing import Optional

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]")
# (anywhere in a line: a tqdm bar drawn without a newline runs into it)
# Python logging as transformers (`[INFO|trainer.py:2668] date >>`) and LLaMA-Factory (`[INFO|date] mod:line >>`)
# format it: start-up chatter whose numbers are line numbers and counts, never metrics
LOGGER_LINE = re.compile(r"\[(?:INFO|WARNING|WARN|ERROR|DEBUG|CRITICAL)\|")
_PER_EPOCH = re.compile(r"Num update steps per epoch\s*=\s*([\d,]+)")
_TOTAL = re.compile(r"Total optimization steps\s*=\s*([\d,]+)")
_EPOCHS = re.compile(r"Num Epochs\s*=\s*([\d,]+)")
LOGGED_DICT = ">> {"  # a logger line that carries a log dict after its prefix
_COUNTER = re.compile(r"(?:^|[\s|])(\d+)/(\d+)\s*\[")


def clean(line: str) -> str:
    """The line without terminal escapes (tqdm's cursor-up `\\x1b[A`), which no reason or metric keeps."""
    return _ANSI.sub("", line) if "\x1b" in line else line


class Console:
    """What one console has said so far: whether a line is chatter, and the step of each metric line."""

    def __init__(self) -> None:
        self.per_epoch: Optional[int] = None  # the Trainer's "Num update steps per epoch"
        self.total: Optional[int] = None  # its "Total optimization steps": the bar that counts steps
        self.counter: Optional[int] = None  # the training bar's last N
        self.epochs: Optional[int] = None  # its "Num Epochs"
        self.in_dump = False  # inside a dump a logger line opened (`Model config LlamaConfig {` ... `}`)

    def observe(self, line: str) -> bool:
        """Reads the Trainer's start-up numbers and the training bar's counter off the line; True where the
        line is chatter (a logger line, or a line of the config dump one opened), whose numbers are no metrics."""
        if self.in_dump:
            self.in_dump = line.rstrip() != "}"
            return True
        if "Num Epochs" in line and (found := _EPOCHS.search(line)):
            self.epochs = int(found.group(1).replace(",", "")) or None
        if "steps" in line:
            if found := _PER_EPOCH.search(line):
                self.per_epoch = int(found.group(1).replace(",", "")) or None
            elif found := _TOTAL.search(line):
                self.total = int(found.group(1).replace(",", "")) or None
        if "/" in line and "[" in line:
            for n, m in _COUNTER.findall(line):
                if self.total is None or int(m) == self.total:  # an eval bar (0/3) is not the step
                    self.counter = int(n)
        if LOGGER_LINE.search(line):
            if LOGGED_DICT in line:  # LLaMA-Factory's web UI log: `[INFO|...] logging.py:157 >> {'loss': 2.28, ...}`
                return False
            self.in_dump = line.rstrip().endswith("{")
            return True
        return False

    def step_of(self, named: Optional[int], metrics: dict[str, float]) -> Optional[int]:
        """The step a metric line belongs to: the one it names, else epoch x steps per epoch, else the bar's."""
        if named is not None:
            return named
        epoch = metrics.get("epoch")
        per_epoch = self.per_epoch or self._per_epoch_from_totals()
        if epoch is not None and per_epoch and epoch == epoch:
            return max(1, round(epoch * per_epoch))
        return self.counter

    def _per_epoch_from_totals(self) -> Optional[float]:
        """transformers 4 prints no steps per epoch: "Total optimization steps" over "Num Epochs" where those
        divide (a run by epochs; one cut by max_steps rounds its epoch count up, and is left alone)."""
        if self.total and self.epochs and self.total % self.epochs == 0:
            return self.total / self.epochs
        return None


def trainer_series(lines, parser) -> Optional[list[tuple[str, float, int, Optional[int]]]]:
    """A saved Trainer console's log dicts at the Trainer's steps (epoch x steps per epoch), or None where the
    console is no Trainer's (nothing gives its steps per epoch): `import` of a `running_log.txt`."""
    console, out = Console(), []
    for line in lines:
        line = clean(line)
        if console.observe(line) or "{" not in line:
            continue
        ms, named, metrics = parser.parse_line(line)
        step = console.step_of(named, metrics)
        if metrics and step is not None and "epoch" in metrics:
            out += [(k, v, step, ms) for k, v in metrics.items()]
    return out or None
