"""LLaMA-Factory's own record of a run: `trainer_log.jsonl` and its YAML config.

- `trainer_log.jsonl`: one JSON object per log, at full precision, with its step (`current_steps`) and the
  run's length (`total_steps`); written as training goes, so a run cut short has it to its last step where
  its checkpoints stop earlier. `percentage`, `elapsed_time` and `remaining_time` are progress, not metrics.
- The YAML `llamafactory-cli train` read (`training_args.yaml` where the web UI saved one beside the run, or
  the file and `key=value` overrides of the command line): what ran, under tunelog's names
  (`learning_rate` -> `train.learning_rate`, `lora_rank` -> `lora.r`); paths and logging cadence are
  identity (recorded, never a change).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ..integrations.hf_names import metric_name
from ..logs.judge import COMPLETE
from ..vocabulary import Outcome
from .base import NONE, RUN, Folder, ReadError, Reading, number

LOG = "trainer_log.jsonl"
CONFIGS = ("training_args.yaml", "llamafactory_config.yaml")
UI_LOG = "running_log.txt"  # the web UI's console of the run (read by the generic reader: a Trainer console)
_PROGRESS = {"current_steps", "total_steps", "percentage", "elapsed_time", "remaining_time"}
NAMES = {
    "learning_rate": "train.learning_rate",
    "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "max_steps": "train.max_steps",
    "num_train_epochs": "train.epochs",
    "lr_scheduler_type": "train.schedule",
    "warmup_ratio": "train.warmup_ratio",
    "warmup_steps": "train.warmup_steps",
    "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm",
    "optim": "train.optimizer",
    "seed": "train.seed",
    "lora_rank": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "lora_target": "lora.target_modules",
    "model_name_or_path": "model.name",
    "batch_size": "train.batch_size",  # the web UI's saved YAML (`train.batch_size` under its `train.` section)
    "model_name": "model.name",
}
UI_SECTIONS = ("top.", "train.", "eval.", "infer.", "export.")  # the web UI saves its fields as `SECTION.NAME`
IDENTITY = {
    "output_dir",
    "logging_dir",
    "dataset_dir",
    "run_name",
    "logging_steps",
    "save_steps",
    "eval_steps",
    "report_to",
    "overwrite_output_dir",
    "overwrite_cache",
    "plot_loss",
    "preprocessing_num_workers",
    "dataloader_num_workers",
    "trust_remote_code",
}


def config_params(config: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """A LLaMA-Factory config (its YAML with any overrides applied) as params, and which of them are identity."""
    params: dict[str, Any] = {}
    identity: set[str] = set()
    for key, value in config.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        key = next((key[len(p) :] for p in UI_SECTIONS if key.startswith(p)), key)
        name = NAMES.get(key, f"lf.{key}")
        params[name] = value
        if key in IDENTITY:
            identity.add(name)
    return params, identity


class LlamaFactoryReader:
    name = "llamafactory"

    def detect(self, folder: Folder) -> bool:
        return bool(folder.top(LOG, UI_LOG, *CONFIGS))

    def signature(self, folder: Folder) -> int:
        return RUN if folder.top(LOG) else NONE

    def read(self, folder: Folder) -> Reading:
        reading = Reading()
        config = self._config(folder)
        if config:
            reading.params, reading.identity = config_params(config[1])
            reading.files.append(folder.files[config[0]])
        if folder.top(LOG):
            read_log(folder.text(LOG), reading)
            reading.files.append(folder.files[LOG])
        return reading

    @staticmethod
    def _config(folder: Folder) -> Optional[tuple[str, dict]]:
        """The run's LLaMA-Factory YAML: `training_args.yaml` where the web UI saved one, else, beside a
        `trainer_log.jsonl`, a YAML of the folder that reads as a LLaMA-Factory config (the one the user passed
        to `llamafactory-cli train`, under any name: `stage` and `finetuning_type`, or a model and a template)."""
        named = folder.top(*CONFIGS)
        beside_a_log = folder.top(LOG, UI_LOG)
        candidates = (
            [named] if named else sorted(r for r in folder.glob("*.y*ml") if "/" not in r) if beside_a_log else []
        )
        for name in candidates:
            try:
                data = folder.data(name)
            except ReadError:
                continue
            if isinstance(data, dict) and (
                name == named
                or {"stage", "finetuning_type"} <= set(data)
                or {"model_name_or_path", "template"} <= set(data)
                or "top.finetuning_type" in data
            ):
                return name, data
        return None


def read_log(text: str, reading: Reading) -> None:
    """`trainer_log.jsonl` into the reading: series at `current_steps`, the run's progress against `total_steps`."""
    points: dict[tuple[str, int], float] = {}
    last: Optional[int] = None
    total: Optional[float] = None
    for number_, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            reading.warnings.append(f"{LOG}:{number_}: not JSON, skipped")
            continue
        step = number(entry.get("current_steps")) if isinstance(entry, dict) else None
        if step is None:
            continue
        total = number(entry.get("total_steps")) or total
        is_eval = any(str(k).startswith("eval_") for k in entry)
        for key, value in entry.items():
            v = number(value)
            if v is None or key in _PROGRESS or (key == "epoch" and is_eval):
                continue
            points[(metric_name(key), int(step))] = v
        last = int(step) if last is None else max(last, int(step))
    reading.series = [(key, v, step, None) for (key, step), v in points.items()]
    if last is not None:
        reading.max_step = last
    if total:
        reading.params.setdefault("train.max_steps", int(total))
        reading.trainer_finished = last is not None and last >= COMPLETE * total
        if last is not None and last < COMPLETE * total:
            reading.outcome = (Outcome.INCOMPLETE, f"{LOG}: current_steps {last} of total_steps {int(total)}")


__all__ = ["LlamaFactoryReader", "ReadError", "config_params", "read_log"]
