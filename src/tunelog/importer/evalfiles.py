"""The user's own eval files: `eval.json`, `metrics.json`, `results.json`, `*.jsonl` of metric records
(other names with `--metrics-file GLOB`).

Their numbers are the run's final metrics (nested objects flattened with `/`: `clip/score`). An
`eval_set` / `dataset` field is what the numbers were measured on: it becomes the run's eval key
(`tunelog.eval_key`), so a score on another eval set is never compared with these. Other strings (the
file scored, a date) are recorded as `eval.*` params that are never compared (the eval key is what
says two results compare). A JSONL file counts when
its records hold numbers (a `train.jsonl` of texts does not); records with a `step` are a series.
"""

from __future__ import annotations

import json
from typing import Any

from ..records.base import MAX_CONFIG_BYTES, NONE, WEAK, Folder, Reading, flat, number

DEFAULT_GLOBS = ("eval.json", "metrics.json", "results.json", "*.jsonl")
EVAL_SET_KEYS = ("eval_set", "dataset", "eval_dataset", "benchmark", "test_set")
_STEP_KEYS = ("step", "global_step")
# LLaMA-Factory's progress log: trainer_state.json's log_history again, with progress fields (current_steps,
# percentage, remaining_time) that are no results; the HF reader reads the state
NOT_EVAL_FILES = ("trainer_log.jsonl",)


class EvalFilesReader:
    name = "eval-files"

    def __init__(self, globs: tuple[str, ...] = DEFAULT_GLOBS):
        self.globs = globs or DEFAULT_GLOBS

    def _files(self, folder: Folder) -> list[str]:
        found = {
            rel
            for pattern in self.globs
            for rel in folder.glob(pattern)
            if rel not in folder.claimed and rel.rsplit("/", 1)[-1] not in NOT_EVAL_FILES
        }
        return sorted(found, key=lambda r: (r.count("/"), r))

    def detect(self, folder: Folder) -> bool:
        return bool(self._files(folder))

    def signature(self, folder: Folder) -> int:
        """A user's eval file is a run only where no run lies below it (a metrics.json beside run folders
        summarises them)."""
        return WEAK if any("/" not in rel for rel in self._files(folder)) else NONE

    def read(self, folder: Folder) -> Reading:
        reading = Reading()
        for rel in self._files(folder):
            if rel.endswith(".jsonl"):
                if folder.size(rel) <= MAX_CONFIG_BYTES * 16:
                    self._records(folder, rel, reading)
            else:
                data = folder.data(rel)
                if isinstance(data, dict):
                    reading.files.append(folder.files[rel])
                    self._record(data, reading, rel)
        return reading

    def _records(self, folder: Folder, rel: str, reading: Reading) -> None:
        lines = [(n, line) for n, line in enumerate(folder.text(rel).splitlines(), start=1) if line.strip()]
        records = []
        for n, line in lines:  # n: the file's own line number, as an editor shows it
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):  # `Average test loss: 0.0695` printed into the file
                reading.warnings.append(f"{rel}: line {n} is not JSON, skipped ({line.strip()[:60]!r})")
                continue
            if isinstance(record, dict):
                records.append(record)
        if not any(number(v) is not None for r in records[:5] for v in r.values()):
            folder.claimed.discard(rel)
            return  # data, not metrics
        reading.files.append(folder.files[rel])
        for record in records:
            step = next((number(record[k]) for k in _STEP_KEYS if number(record.get(k)) is not None), None)
            if step is None:
                self._record(record, reading, rel)
                continue
            for key, value in flat(record, sep="/").items():
                if key not in _STEP_KEYS and (v := number(value)) is not None:
                    reading.series.append((key, v, int(step), None))
                    reading.max_step = max(reading.max_step or 0, int(step))
                elif key in EVAL_SET_KEYS and isinstance(value, str) and value.strip():
                    reading.eval_key = reading.eval_key or f"eval_set:{value.strip()}"

    def _record(self, data: dict[str, Any], reading: Reading, rel: str) -> None:
        for key, value in flat(data, sep="/").items():
            v = number(value)
            if v is not None:
                reading.final[key] = v
            elif isinstance(value, (str, bool)):
                if key in EVAL_SET_KEYS and isinstance(value, str) and value.strip():
                    reading.eval_key = reading.eval_key or f"eval_set:{value.strip()}"
                reading.params[f"eval.{key}"] = value
                reading.identity.add(f"eval.{key}")
