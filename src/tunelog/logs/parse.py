"""Metrics out of training logs: imported legacy runs and a command trainer's live output.

Default styles: Hugging Face Trainer dict lines and JSON lines (`{'loss': 2.3, 'epoch': 0.5}`, and
transformers 5's strings `{'loss': '2.3', 'grad_norm': 'nan'}`),
tqdm postfixes (`[00:10<00:20, 4.9it/s, loss=2.3]`), `key=value` and `key: value` pairs,
`batch N, loss: x`, and result lines (`Final eval loss: 1.23` -> `final_eval_loss`). A leading
timestamp gives the line's time. Extra regexes with named groups (`(?P<key>..)(?P<value>..)`,
optional `(?P<step>..)`) can be added; they win over the defaults on their line.
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from .console import LOGGED_DICT, LOGGER_LINE

NUMBER = r"[-+]?(?:\d++\.?+\d*+|\.\d++)(?:[eE][-+]?\d++)?+|[-+]?(?i:nan|inf(?:inity)?)"
_KEY = r"[A-Za-z_][\w./\-]*+"
# the tokens of a line, each after a separator (blank, `,`, `[`, `(`, `|`, `{`, `;`; the line is
# read with a blank in front): tqdm's counter `N/M [`; `key=value`, `key: value`, `'key': value`
# (not tqdm's `desc: 40%|`); `step N` / `batch N` / `iteration #N` (a step key, blanks, a number)
_STEP_WORD = r"(?<=step|Step|STEP|iter|Iter|ITER|atch|ATCH|tion|TION)"
_TOKENS = re.compile(
    rf"[ \t,\[(|{{;][ \t]*+(?:(\d++)/\d+[ \t]*\[|['\"]?({_KEY})['\"]?(?:[ \t]*+([=:])|{_STEP_WORD}[ \t]*+#?)[ \t]*+"
    rf"['\"]?+({NUMBER})(?![\w.:/-]|%\|))"
)
_TIME = re.compile(r"\s*\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,]\d+)?\]?\s*")
_RESULT = re.compile(rf"[^\w\n]*+((?i:final|best|test|result)\b[\w /-]*?)\s*[:=]\s*({NUMBER})\s*$")
STEP_KEYS = {"step", "global_step", "iter", "iteration", "batch"}
_STEP_SPELLINGS = STEP_KEYS | {k.title() for k in STEP_KEYS} | {k.upper() for k in STEP_KEYS}
_TIME_START = set("[0123456789 \t")
_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")  # UTF-8 never has these bytes inside a character
_PLANS_KEPT = 4096  # line shapes remembered; a log's lines come in far fewer shapes than that

Record = tuple[Optional[int], Optional[int], dict[str, float]]  # (time in ms, step, metrics) of one line


@dataclass
class ParsedLog:
    series: list[tuple[str, float, int, Optional[int]]] = field(default_factory=list)  # key, value, step, ms
    first_ms: Optional[int] = None
    last_ms: Optional[int] = None
    lines: int = 0
    metric_lines: int = 0
    max_step: Optional[int] = None  # the largest step a line named itself (not a per-key line counter)
    counts: dict[str, int] = field(default_factory=dict)  # lines each key was read on
    stepped: set[str] = field(default_factory=set)  # keys read on a line that named its step

    def final(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value, _, _ in self.series:
            out[key] = value
        return out


class LogParser:
    """Why plans per line shape: a long run's log has millions of lines but a handful of shapes
    (the same progress line with other numbers), and running regexes on every line was most of
    the cost (40,000 lines/s with a regex call per style per line; about 150,000 with one).
    A line's shape is the line with its digits zeroed; the regexes run once per shape and record
    where the timestamp, step, keys and values sit (`_plan`); each line is then sliced at those
    places. All default styles are alternatives of `_TOKENS`, each starting at a separator, with
    possessive quantifiers so a plain word fails without backtracking. The spec's own patterns
    may tell digits apart, so they run on every line."""

    def __init__(self, patterns: Iterable[str] = ()):
        self.extra = [re.compile(p) for p in patterns]
        self._ms_cache: dict[str, int] = {}
        self._plans: dict[bytes, Plan] = {}

    def parse_line(self, line: str) -> Record:
        """(time in ms, step, metrics) of one line; metrics empty when the line holds none."""
        shape = line.encode().translate(_ZERO_DIGITS)  # bytes: a C table lookup, ten times a str's translate
        plan = self._plans.get(shape)
        if plan is None:
            plan = _plan(shape.decode())
            if len(self._plans) >= _PLANS_KEPT:
                self._plans.clear()
            self._plans[shape] = plan
        stamp, step_at, pairs, result = plan
        ms = self._ms(f"{line[stamp[0] : stamp[1]]}T{line[stamp[2] : stamp[3]]}") if stamp else None
        step = None if step_at is None else int(float(line[step_at[0] : step_at[1]]))
        if result:  # `Best validation loss: 1.2` is `best_validation_loss`, not `loss`
            key = re.sub(r"\W+", "_", line[result[0] : result[1]].strip().lower()).strip("_")
            metrics = {key: float(line[result[2] : result[3]])}
        else:
            metrics = {line[k0:k1]: float(line[v0:v1]) for k0, k1, v0, v1 in pairs}
        for pattern in self.extra:
            for m in pattern.finditer(line):
                groups = m.groupdict()
                if groups.get("key") and groups.get("value"):
                    metrics[groups["key"]] = float(groups["value"])
                if groups.get("step"):
                    step = int(groups["step"])
        return ms, step, metrics

    def parse(self, lines: Iterable[str]) -> ParsedLog:
        """Every metric line of a log; steps counted per key where the line names none.

        The cyclic garbage collector is paused meanwhile: the series is millions of small tuples
        with no cycles, and each full collection would walk all of them again (a third of the time)."""
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._parse(lines)
        finally:
            if paused:
                gc.enable()

    def _parse(self, lines: Iterable[str]) -> ParsedLog:
        log = ParsedLog()
        counters: dict[str, int] = {}
        last: dict[str, int] = {}  # a key's steps only grow: a per-epoch tqdm bar restarts its N/M counter
        append = log.series.append
        parse_line = self.parse_line
        first_ms = last_ms = max_step = None
        n = metric_lines = 0
        for n, line in enumerate(lines, start=1):  # noqa: B007 (n: the line count, read after the loop)
            ms, step, metrics = parse_line(line)
            if ms is not None:
                last_ms = ms
                if first_ms is None:
                    first_ms = ms
            if not metrics:
                continue
            metric_lines += 1
            if step is not None:
                log.stepped.update(metrics)
                if max_step is None or step > max_step:
                    max_step = step
            for key, value in metrics.items():
                at = counters[key] = counters.get(key, 0) + 1
                if step is not None:
                    at = step
                previous = last.get(key)
                if previous is not None and at <= previous:
                    at = previous + 1
                last[key] = at
                append((key, value, at, ms))
        log.lines, log.metric_lines, log.first_ms, log.last_ms = n, metric_lines, first_ms, last_ms
        log.max_step, log.counts = max_step, counters
        return log

    def parse_text(self, text: str) -> ParsedLog:
        return self.parse(text.splitlines())

    def _ms(self, stamp: str) -> int:
        """A timestamp in ms (UTC); each second is converted once."""
        ms = self._ms_cache.get(stamp)
        if ms is None:
            ms = self._ms_cache[stamp] = int(datetime.fromisoformat(stamp + "+00:00").timestamp() * 1000)
        return ms


Span = tuple[int, int]
Plan = tuple[
    Optional[tuple[int, int, int, int]],
    Optional[Span],
    list[tuple[int, int, int, int]],
    Optional[tuple[int, int, int, int]],
]


def _plan(shape: str) -> Plan:
    """Where a line's timestamp, step, metric keys and values sit, found by the regexes on its shape.

    Every default pattern treats all digits alike, so a line with its digits zeroed matches at the
    same places as the line itself; the spans are then valid for every line of that shape.
    """
    stamp, body = None, 0
    if shape[:1] in _TIME_START:
        match = _TIME.match(shape)
        if match:
            stamp, body = (*match.span(1), *match.span(2)), match.end()
    step_at: Optional[Span] = None
    pairs = []
    start = 0
    if LOGGER_LINE.search(shape):  # `[INFO|trainer.py:2668] ... >>`: its numbers are line numbers and counts,
        at = shape.find(LOGGED_DICT)  # unless a log dict follows the prefix (LLaMA-Factory's running_log.txt)
        if at < 0:
            return stamp, None, pairs, None
        start = at + len(LOGGED_DICT)  # in " " + shape: the dict's opening brace, a token separator
    for m in _TOKENS.finditer(" " + shape, start):  # spans are one past the line's, for the blank in front
        key = m.group(2)
        if key in _STEP_SPELLINGS or (key is None and m.group(1)):
            group = 4 if key else 1
            step_at = step_at or (m.start(group) - 1, m.end(group) - 1)
        elif m.group(3):
            pairs.append((m.start(2) - 1, m.end(2) - 1, m.start(4) - 1, m.end(4) - 1))
    result = None
    if pairs:
        match = _RESULT.match(shape, body)
        if match:
            result = (*match.span(1), *match.span(2))
    return stamp, step_at, pairs, result


def has_nonfinite(log: ParsedLog, key_part: str = "loss") -> bool:
    return any(key_part in k and not math.isfinite(v) for k, v, _, _ in log.series)
