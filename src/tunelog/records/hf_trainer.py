"""Hugging Face Trainer / TRL output folders.

- `trainer_state.json` (the folder's own, else the newest `checkpoint-N/`'s): `log_history` as
  `train/…` and `eval/…` series by `global_step` (the names tunelog's own trainer logs: `train/loss`,
  `train/lr`, `eval/loss`), `max_steps` and the batch size as params, `best_metric`.
- `all_results.json`, `eval_results.json`, `train_results.json`: final metrics.
- `adapter_config.json` (peft): rank, alpha, dropout, target modules and the base model, under
  tunelog's names (`lora.r`, `lora.alpha`, ...) so imported and trained runs compare.
- `checkpoint-N/` folders: the run's saved steps (tag `tunelog.checkpoints`); its TensorBoard
  events (`runs/`) hold what `log_history` holds and are left unread.

`training_args.bin` is a pickle: it is never opened (unpickling runs code).
"""

from __future__ import annotations

from typing import Any, Optional

from .. import tracking as t
from ..integrations.hf_names import metric_name
from ..logs.judge import COMPLETE
from ..vocabulary import Outcome
from .base import CHECKPOINT, NONE, RUN, WEAK, Folder, ReadError, Reading, number

RESULT_FILES = (
    "all_results.json",
    "eval_results.json",
    "train_results.json",
    "test_results.json",
    "predict_results.json",
)
_STATE_PARAMS = {"max_steps": "train.max_steps", "train_batch_size": "train.batch_size"}
# how often it logged, evaluated and saved: recorded, not compared (the run learns the same); so is the
# epoch count Trainer derived from max_steps (max_steps is what it stops at: the length a run is judged by)
_STATE_IDENTITY = {
    "logging_steps",
    "eval_steps",
    "save_steps",
    "trial_name",
    "best_model_checkpoint",
    "num_train_epochs",
}
_ADAPTER_PARAMS = {
    "r": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "target_modules": "lora.target_modules",
    "base_model_name_or_path": "model.name",
    "peft_type": "lora.peft_type",
    "bias": "lora.bias",
    "use_rslora": "lora.use_rslora",
    "use_dora": "lora.use_dora",
    "modules_to_save": "lora.modules_to_save",
}


class HFTrainerReader:
    name = "hf-trainer"

    def detect(self, folder: Folder) -> bool:
        checkpoints = self._checkpoints(folder)
        return bool(
            folder.top("trainer_state.json", "adapter_config.json", *RESULT_FILES)
            or _newest(folder, checkpoints, "trainer_state.json")
        )

    def signature(self, folder: Folder) -> int:
        """A trainer_state.json or results file (the folder's own, or only its checkpoints'): a run; an
        adapter_config.json alone is a saved adapter, which may be one."""
        if folder.top("trainer_state.json", *RESULT_FILES) or _newest(
            folder, self._checkpoints(folder), "trainer_state.json"
        ):
            return RUN
        return WEAK if folder.top("adapter_config.json") else NONE

    def _checkpoints(self, folder: Folder) -> list[tuple[int, str]]:
        found = {m.group(1): rel.split("/", 1)[0] for rel in folder.files if (m := CHECKPOINT.match(rel.split("/")[0]))}
        return sorted((int(step), name) for step, name in found.items())

    def _state(self, folder: Folder, checkpoints: list[tuple[int, str]]) -> Optional[tuple[str, dict]]:
        """The folder's trainer_state.json, or the newest checkpoint's when that went further; each parsed
        once (a long run's state is megabytes). An unreadable one loses to a readable one."""
        names = [
            n for n in ("trainer_state.json", _newest(folder, checkpoints, "trainer_state.json")) if n in folder.files
        ]
        loaded, error = [], None
        for name in names:
            try:
                loaded.append((name, _dict(folder.data(name), name)))
            except ReadError as exc:
                error = error or exc
        if not loaded:
            if error:
                raise error
            return None
        return max(loaded, key=lambda item: _global_step(item[1]))  # equal steps: the folder's own, listed first

    def read(self, folder: Folder) -> Reading:
        reading = Reading()
        checkpoints = self._checkpoints(folder)
        if checkpoints:
            reading.tags[t.TAG_CHECKPOINTS] = ", ".join(n for _, n in checkpoints)[:5000]
        state = self._state(folder, checkpoints)
        if state:
            self._read_state(folder, *state, reading)
            folder.claimed.update(folder.glob("runs/*"))  # the TensorBoard copy of log_history
        for name in RESULT_FILES:
            if name in folder.files:
                reading.files.append(folder.files[name])
                for key, value in _dict(folder.data(name), name).items():
                    if (v := number(value)) is not None:
                        reading.final.setdefault(metric_name(key, summary=True), v)
        reading.runtime_s = reading.final.get("train/runtime")  # `train_runtime`: the run's own duration
        adapter = folder.top("adapter_config.json") or _newest(folder, checkpoints, "adapter_config.json")
        if adapter:
            self._read_adapter(folder, adapter, reading)
        return reading

    def _read_state(self, folder: Folder, name: str, state: dict, reading: Reading) -> None:
        reading.files.append(folder.files[name])
        for key, param in _STATE_PARAMS.items():
            if state.get(key) is not None:
                reading.params[param] = state[key]
        for key in _STATE_IDENTITY:
            if state.get(key) is not None:
                reading.params[f"hf.{key}"] = state[key]
                reading.identity.add(f"hf.{key}")
        if (best := number(state.get("best_metric"))) is not None:
            reading.final["eval/best_metric"] = best
        points: dict[tuple[str, int], float] = {}  # a second evaluate() at the last step replaces the first
        for entry in state.get("log_history") or []:
            if not isinstance(entry, dict) or number(entry.get("step")) is None:
                continue
            step = int(entry["step"])
            summary = "train_runtime" in entry
            is_eval = any(str(k).startswith("eval_") for k in entry)
            for key, value in entry.items():
                v = number(value)
                if v is None or key in ("step", "total_flos") or (key == "epoch" and is_eval):
                    continue
                if summary:
                    reading.final[metric_name(key, summary=True)] = v
                else:
                    points[(metric_name(key), step)] = v
        reading.series = [(key, v, step, None) for (key, step), v in points.items()]
        global_step, max_steps = number(state.get("global_step")), number(state.get("max_steps"))
        if global_step is not None:
            reading.max_step = int(global_step)
        reading.trainer_finished = bool(global_step is not None and max_steps and global_step >= COMPLETE * max_steps)
        if global_step is not None and max_steps and global_step < COMPLETE * max_steps:
            reading.outcome = (
                Outcome.INCOMPLETE,
                f"{name}: global_step {int(global_step)} of max_steps {int(max_steps)}",
            )

    def _read_adapter(self, folder: Folder, name: str, reading: Reading) -> None:
        config = _dict(folder.data(name), name)
        reading.files.append(folder.files[name])
        for key, param in _ADAPTER_PARAMS.items():
            value = config.get(key)
            if value is None:
                continue
            if isinstance(value, list):
                value = ",".join(sorted(map(str, value)))
            reading.params[param] = value
        base = config.get("base_model_name_or_path")
        if isinstance(base, str) and ("/" in base or base.startswith(".")):
            reading.lineage.append(base)  # stage 2 trained on stage 1's output: a path into another run


def _dict(data: Any, name: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ReadError(f"{name}: expected a JSON object")
    return data


def _global_step(state: dict) -> int:
    try:
        return int(state.get("global_step") or 0)
    except (TypeError, ValueError):
        return -1


def _newest(folder: Folder, checkpoints: list[tuple[int, str]], name: str) -> Optional[str]:
    """`checkpoint-N/NAME` of the highest N that has one."""
    return next((f"{n}/{name}" for _, n in reversed(checkpoints) if f"{n}/{name}" in folder.files), None)
