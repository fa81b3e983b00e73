"""Metrics out of training logs: imported legacy runs now, a command trainer's output later.

Default styles, tried on every line: Hugging Face Trainer dict lines (`{'loss': 2.3,
'epoch': 0.5}`), tqdm postfixes (`[00:10<00:20, 4.9it/s, loss=2.3]`), `key=value` and
`key: value` pairs, `batch N, loss: x`, and result lines (`Final eval loss: 1.23` ->
`final_eval_loss`). A leading timestamp gives the line's time. Extra regexes with named
groups (`(?P<key>..)(?P<value>..)`, optional `(?P<step>..)`) can be added.
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Optional

NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf|NaN|Inf|infinity)"
_PAIR = re.compile(rf"([A-Za-z_][\w./\-]*)\s*[=:]\s*({NUMBER})(?![\w.:/-])")
_STEP = re.compile(r"\b(?:global_step|step|batch|iter(?:ation)?)\s*[=:#]?\s*(\d+)\b|\b(\d+)/\d+\s*\[", re.I)
_TIME = re.compile(r"^\s*\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,]\d+)?\]?\s*")
_DICT = re.compile(r"\{[^{}]*\}")
_RESULT = re.compile(rf"^\W*((?:final|best|test|result)\b[\w /-]*?)\s*[:=]\s*({NUMBER})\s*$", re.I)
STEP_KEYS = {"step", "global_step", "iter", "iteration", "batch"}


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


def _number(text: str) -> float:
    return float(text.lower().replace("infinity", "inf"))


def _timestamp(line: str) -> tuple[Optional[int], str]:
    match = _TIME.match(line)
    if not match:
        return None, line
    when = datetime.strptime(f"{match.group(1)} {match.group(2)}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000), line[match.end():]


class LogParser:
    def __init__(self, patterns: Iterable[str] = ()):
        self.extra = [re.compile(p) for p in patterns]

    def parse_line(self, line: str) -> tuple[Optional[int], Optional[int], dict[str, float]]:
        """(time in ms, step, metrics) of one line; metrics empty when the line holds none."""
        ms, body = _timestamp(line)
        metrics: dict[str, float] = {}
        step: Optional[int] = None
        for pattern in self.extra:
            for m in pattern.finditer(body):
                groups = m.groupdict()
                if groups.get("key") and groups.get("value"):
                    metrics[groups["key"]] = _number(groups["value"])
                if groups.get("step"):
                    step = int(groups["step"])
        result = _RESULT.match(body)
        if result:
            key = re.sub(r"[^\w]+", "_", result.group(1).strip().lower()).strip("_")
            return ms, step, {**metrics, key: _number(result.group(2))}
        for blob in _DICT.findall(body) if "{" in body else ():
            metrics.update(self._dict_line(blob))
        if not metrics or self.extra:
            for key, value in _PAIR.findall(body):
                metrics.setdefault(key, _number(value))
        for key in list(metrics):
            if key.lower() in STEP_KEYS:
                step = int(metrics.pop(key))
        if step is None and metrics:
            match = _STEP.search(body)  # `step 5`, `batch 5`, or tqdm's `5/100 [`
            step = int(match.group(1) or match.group(2)) if match else None
        return ms, step, metrics

    @staticmethod
    def _dict_line(blob: str) -> dict[str, float]:
        """A Hugging Face Trainer log dict, read with literal_eval (data only, never code)."""
        try:
            data = ast.literal_eval(blob)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def parse(self, lines: Iterable[str]) -> ParsedLog:
        """Every metric line of a log; steps counted per key where the line names none."""
        log = ParsedLog()
        counters: dict[str, int] = {}
        last: dict[str, int] = {}  # a key's steps only grow: a per-epoch tqdm bar restarts its N/M counter
        for line in lines:
            log.lines += 1
            ms, step, metrics = self.parse_line(line)
            if ms is not None:
                log.first_ms = ms if log.first_ms is None else log.first_ms
                log.last_ms = ms
            if not metrics:
                continue
            log.metric_lines += 1
            for key, value in metrics.items():
                counters[key] = counters.get(key, 0) + 1
                at = step if step is not None else counters[key]
                if key in last and at <= last[key]:
                    at = last[key] + 1
                last[key] = at
                log.series.append((key, value, at, ms))
        return log


def has_nonfinite(log: ParsedLog, key_part: str = "loss") -> bool:
    return any(key_part in k and not math.isfinite(v) for k, v, _, _ in log.series)
