"""A trainer's own record of a run, read from its output folder: one reader per format.

Why a package of its own: the same files are read by `import` (a folder on disk) and by the command trainer
(the folder its script just wrote), and must read the same either way. A record outranks any console: its
values are at full precision and at the steps the trainer counted.

- `hf_trainer`: `trainer_state.json` (the folder's own, else the newest checkpoint's), `*_results.json`,
  `adapter_config.json`.
- `llamafactory`: `trainer_log.jsonl` (`current_steps`) and LLaMA-Factory's YAML.
- `model_card`: the `README.md` every Trainer writes ("Training hyperparameters": what ran).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..vocabulary import SEVERITY
from .base import Folder, Reader, Reading
from .hf_trainer import RESULT_FILES, HFTrainerReader
from .llamafactory import LlamaFactoryReader
from .model_card import ModelCardReader

# the small files of a record kept with a command trainer's run (never weights): what the run's numbers came from
RECORD_FILES = (
    "trainer_state.json",
    "trainer_log.jsonl",
    *RESULT_FILES,
    "README.md",
    "training_args.yaml",
    "training_*.png",
)


def record_points(r: Reading) -> list[tuple[str, float, int, bool]]:
    """(key, value, step, is_result): the series, then each result at the run's last step (one past a series'
    last point when the result differs from it, so a chart's last point stays the series' own)."""
    out = [(k, v, s, False) for k, v, s, _ in r.series]
    last: dict[str, tuple[int, float]] = {}
    for k, v, s, _ in r.series:
        if k not in last or s >= last[k][0]:
            last[k] = (s, v)
    top = r.max_step or 0
    for k, v in r.final.items():
        if k in last and (last[k][1] == v or (math.isnan(v) and math.isnan(last[k][1]))):
            continue
        out.append((k, v, max(top, last[k][0] + 1) if k in last else top, True))
    return out


def record_readers() -> list[Reader]:
    """In merge order: LLaMA-Factory's log first (as exact as `log_history`, and to the last step where a cut
    run's checkpoints stop earlier), then the Trainer's state and results, then the model card."""
    return [LlamaFactoryReader(), HFTrainerReader(), ModelCardReader()]


def read_record(path: Path) -> Reading:
    """What the trainer's own files in `path` say of its run (an empty Reading where it left none)."""
    folder = Folder(Path(path), Path(path))
    return merge([reader.read(folder) for reader in record_readers() if reader.detect(folder)])


def merge(readings: list[Reading]) -> Reading:
    """One reading: the first reader's param, series or result wins; the worst outcome wins."""
    out = Reading()
    seen_series: set[str] = set()
    for r in readings:
        for k, v in r.params.items():
            out.params.setdefault(k, v)
        out.identity |= r.identity
        keys = {p[0] for p in r.series} - seen_series
        out.series += [p for p in r.series if p[0] in keys]
        seen_series |= keys
        for k, v in r.final.items():
            out.final.setdefault(k, v)
        if r.outcome and (out.outcome is None or SEVERITY[r.outcome[0]] > SEVERITY[out.outcome[0]]):
            out.outcome = r.outcome
        out.lineage += r.lineage
        out.eval_key = out.eval_key or r.eval_key
        out.max_step = max(filter(None.__ne__, (out.max_step, r.max_step)), default=None)
        out.epoch_base = max(out.epoch_base, r.epoch_base)
        out.trainer_finished = out.trainer_finished or r.trainer_finished
        out.runtime_s = out.runtime_s or r.runtime_s
        out.first_ms = min(filter(None.__ne__, (out.first_ms, r.first_ms)), default=None)
        out.last_ms = max(filter(None.__ne__, (out.last_ms, r.last_ms)), default=None)
        out.files += [f for f in r.files if f not in out.files]
        out.note = out.note or r.note
        for k, v in r.tags.items():
            out.tags.setdefault(k, v)
        out.problem = out.problem or r.problem
    out.identity &= set(out.params)
    return out


__all__ = ["RECORD_FILES", "Reading", "merge", "read_record", "record_points", "record_readers"]
