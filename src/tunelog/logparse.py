"""Metrics out of training logs: imported legacy runs and a command trainer's live output.

Default styles: Hugging Face Trainer dict lines and JSON lines (`{'loss': 2.3, 'epoch': 0.5}`),
tqdm postfixes (`[00:10<00:20, 4.9it/s, loss=2.3]`), `key=value` and `key: value` pairs,
`batch N, loss: x`, and result lines (`Final eval loss: 1.23` -> `final_eval_loss`). A leading
timestamp gives the line's time. Extra regexes with named groups (`(?P<key>..)(?P<value>..)`,
optional `(?P<step>..)`) can be added; they win over the defaults on their line.

Why one pass over the whole text: a log of a long run has millions of lines, and Python's
per-line, per-regex call overhead was most of the cost (40,000 lines/s). The default styles
are one regex whose every alternative starts with a separator character (line start, blank,
`,`, `[`, `(`, `|`, `{`, `;`), so the engine only tries them there, with possessive
quantifiers so a plain word fails without backtracking; a second, newline-anchored regex
finds timestamps and result lines. Lines are told apart by position.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Optional

NUMBER = r"[-+]?(?:\d++\.?+\d*+|\.\d++)(?:[eE][-+]?\d++)?+|[-+]?(?i:nan|inf(?:inity)?)"
_KEY = r"[A-Za-z_][\w./\-]*+"
# the tokens of a line, each after a separator (blank, `,`, `[`, `(`, `|`, `{`, `;`; the line is
# read with a blank in front): tqdm's counter `N/M [`; `key=value`, `key: value`, `'key': value`
# (not tqdm's `desc: 40%|`); `step N` / `batch N` / `iteration #N` (a step key, blanks, a number)
_STEP_WORD = r"(?<=step|Step|STEP|iter|Iter|ITER|atch|ATCH|tion|TION)"
_TOKENS = re.compile(
    rf"[ \t,\[(|{{;][ \t]*+(?:(\d++)/\d+[ \t]*\[|['\"]?({_KEY})['\"]?(?:[ \t]*+([=:])|{_STEP_WORD}[ \t]*+#?)[ \t]*+"
    rf"({NUMBER})(?![\w.:/-]|%\|))")
_TIME = re.compile(r"\s*\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,]\d+)?\]?\s*")
_RESULT = re.compile(rf"[^\w\n]*+((?i:final|best|test|result)\b[\w /-]*?)\s*[:=]\s*({NUMBER})\s*$")
STEP_KEYS = {"step", "global_step", "iter", "iteration", "batch"}
_STEP_SPELLINGS = STEP_KEYS | {k.title() for k in STEP_KEYS} | {k.upper() for k in STEP_KEYS}
_TIME_START = set("[0123456789 \t")

Record = tuple[Optional[int], Optional[int], dict[str, float]]  # (time in ms, step, metrics) of one line


@dataclass
class ParsedLog:
    series: list[tuple[str, float, int, Optional[int]]] = field(default_factory=list)  # key, value, step, ms
    first_ms: Optional[int] = None
    last_ms: Optional[int] = None
    lines: int = 0
    metric_lines: int = 0

    def final(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value, _, _ in self.series:
            out[key] = value
        return out


class LogParser:
    """Why one regex, run once per line: a long run's log has millions of lines, and a regex call per
    style per line was most of the cost (40,000 lines/s). All default styles are alternatives of
    `_TOKENS`, each starting at a separator, with possessive quantifiers so a plain word fails
    without backtracking; timestamps and result lines are looked for only where they can be."""

    def __init__(self, patterns: Iterable[str] = ()):
        self.extra = [re.compile(p) for p in patterns]
        self._ms_cache: dict[str, int] = {}

    def parse_line(self, line: str) -> Record:
        """(time in ms, step, metrics) of one line; metrics empty when the line holds none."""
        ms, body = self._time(line) if line[:1] in _TIME_START else (None, 0)
        step: Optional[int] = None
        metrics: dict[str, float] = {}
        for counter, key, assigned, value in _TOKENS.findall(" " + line):
            if key in _STEP_SPELLINGS:
                step = int(float(value)) if step is None else step
            elif assigned:
                metrics[key] = float(value)
            elif counter and step is None:
                step = int(counter)
        if metrics:
            result = _RESULT.match(line, body)
            if result:  # `Best validation loss: 1.2` is `best_validation_loss`, not `loss`
                metrics = {re.sub(r"\W+", "_", result.group(1).strip().lower()).strip("_"): float(result.group(2))}
        for pattern in self.extra:
            for m in pattern.finditer(line):
                groups = m.groupdict()
                if groups.get("key") and groups.get("value"):
                    metrics[groups["key"]] = float(groups["value"])
                if groups.get("step"):
                    step = int(groups["step"])
        return ms, step, metrics

    def parse(self, lines: Iterable[str]) -> ParsedLog:
        """Every metric line of a log; steps counted per key where the line names none."""
        log = ParsedLog()
        counters: dict[str, int] = {}
        last: dict[str, int] = {}  # a key's steps only grow: a per-epoch tqdm bar restarts its N/M counter
        append = log.series.append
        parse_line = self.parse_line
        for line in lines:
            log.lines += 1
            ms, step, metrics = parse_line(line)
            if ms is not None:
                log.last_ms = ms
                if log.first_ms is None:
                    log.first_ms = ms
            if not metrics:
                continue
            log.metric_lines += 1
            for key, value in metrics.items():
                at = counters[key] = counters.get(key, 0) + 1
                if step is not None:
                    at = step
                previous = last.get(key)
                if previous is not None and at <= previous:
                    at = previous + 1
                last[key] = at
                append((key, value, at, ms))
        return log

    def parse_text(self, text: str) -> ParsedLog:
        return self.parse(text.splitlines())

    def _time(self, line: str) -> tuple[Optional[int], int]:
        """A leading timestamp in ms (UTC) and where the text after it starts; a second is converted once."""
        match = _TIME.match(line)
        if not match:
            return None, 0
        stamp = f"{match.group(1)}T{match.group(2)}"
        ms = self._ms_cache.get(stamp)
        if ms is None:
            ms = self._ms_cache[stamp] = int(datetime.fromisoformat(stamp + "+00:00").timestamp() * 1000)
        return ms, match.end()


def has_nonfinite(log: ParsedLog, key_part: str = "loss") -> bool:
    return any(key_part in k and not math.isfinite(v) for k, v, _, _ in log.series)
