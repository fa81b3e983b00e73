"""kohya-ss sd-scripts: TOML configs, `ss_*` metadata in `.safetensors` headers, the captured console.

- Config: `--config_file` TOML (sections merged into one level, as sd-scripts' `read_config_from_file`
  merges them, a later key winning) or a flat `--output_config` dump: both give the same keys.
  `dataset_config` TOMLs (`[[datasets]]`) are data, not run settings, and are left alone.
- Metadata: the `ss_*` keys sd-scripts writes into each saved LoRA, read from the header only
  (`safetensors.safe_open`; the tensors are never loaded). They give the settings where no config
  survived, and the progress (`ss_steps` of `ss_max_train_steps`) of the last file saved.
- Console (`accelerate launch ... | tee train.log`): tqdm's `steps:` bar, redrawn with carriage
  returns (`301/950 [..., avr_loss=0.0923]`), `epoch N/M`, `saving checkpoint: ...`, `model saved.`
  at the very end. Only the bar's postfix is a metric; start-up counts are not.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Optional

from .. import tracking as t
from ..logs.judge import COMPLETE, Evidence, judge
from ..logs.parse import NUMBER
from ..records.base import NONE, RUN, WEAK, Folder, ReadError, Reading
from ..vocabulary import Outcome

CONFIG_NAMES = ("config.toml", "config_file.toml", "training_config.toml", "train_config.toml")
LOG_NAMES = ("train.log", "training.log", "log.txt", "output.log", "console.log")
# keys that name the run, where it wrote, who it is for, or which seed drew it: recorded, not compared
IDENTITY = {
    "output_dir",
    "output_name",
    "logging_dir",
    "log_prefix",
    "log_tracker_name",
    "log_tracker_config",
    "log_config",
    "wandb_run_name",
    "seed",
    "config_file",
    "output_config",
    "training_comment",
    "metadata_title",
    "metadata_author",
    "metadata_description",
    "metadata_license",
    "metadata_tags",
    "huggingface_repo_id",
    "session_id",
    "training_started_at",
    "training_finished_at",
    "sd_model_hash",
    "new_sd_model_hash",
    "sd_scripts_commit_hash",
    "sample_prompts",
    "console_log_file",
}
SECRETS = {"wandb_api_key", "huggingface_token"}  # never recorded
_BULKY = {"tag_frequency", "dataset_dirs", "reg_dataset_dirs", "bucket_info", "datasets", "network_args"}
LINEAGE = ("network_weights", "resume", "dim_from_weights", "base_weights")
_BAR = re.compile(r"^\s*steps:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)\s*\[([^\]]*)\]")
_POSTFIX = re.compile(rf"([A-Za-z_][\w/]*)=({NUMBER})")
_EPOCH = re.compile(r"^\s*epoch (\d+)/(\d+)\s*$")
# rich puts the source location at the right of an INFO line: `model saved.      train_network.py:1072`
_SAVED = re.compile(r"^\s*(?:\S+\s+)*model saved\.(?:\s+[\w.-]+\.py:\d+)?\s*$")
_STAMP = re.compile(r"^\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})")
_MARKERS = re.compile(
    r"steps:\s+\d+%\||running training / 学習開始|^\S*\s*(?:INFO\s+)?model saved\.$", re.M
)  # sd-scripts' own


class KohyaReader:
    name = "kohya"

    def detect(self, folder: Folder) -> bool:
        return bool(self._configs(folder) or self._models(folder) or self._log(folder))

    def signature(self, folder: Folder) -> int:
        """sd-scripts' console log or its saved LoRAs: a run; a TOML alone (a pyproject.toml) may be one."""
        return RUN if self._models(folder) or self._log(folder) else WEAK if self._configs(folder) else NONE

    def _configs(self, folder: Folder) -> list[str]:
        return [r for r in folder.glob("*.toml") if "/" not in r and "dataset" not in r.lower()]

    def _models(self, folder: Folder) -> list[str]:
        """Saved LoRAs in the folder itself (sd-scripts' `output_dir`); a peft checkpoint's
        `checkpoint-N/adapter_model.safetensors` is no kohya file."""
        found = [
            r for r in folder.glob("*.safetensors") if "/" not in r and not r.startswith(("adapter_model", "model"))
        ]
        return sorted(found, key=lambda r: (folder.files[r].stat().st_mtime, r))

    def _log(self, folder: Folder) -> Optional[str]:
        """A console log with sd-scripts' markers (its first 256 kB looked at)."""
        for name in LOG_NAMES:
            if name in folder.files:
                with folder.files[name].open("rb") as f:
                    head = f.read(1 << 18).decode("utf-8", "replace")
                if _MARKERS.search(head):
                    return name
        return None

    def read(self, folder: Folder) -> Reading:
        reading = Reading()
        for name in sorted(self._configs(folder), key=lambda r: (r not in CONFIG_NAMES, r))[:1]:
            reading.params = merge_sections(folder.data(name), name)
            reading.files.append(folder.files[name])
        self._metadata(folder, reading)
        log = self._log(folder)
        if log:
            reading.files.append(folder.files[log])
            read_console(folder.text(log), reading)
        reading.identity = {k for k in reading.params if k in IDENTITY}
        reading.lineage = [str(reading.params[k]) for k in LINEAGE if isinstance(reading.params.get(k), str)]
        for key in SECRETS:
            reading.params.pop(key, None)
        return reading

    def _metadata(self, folder: Folder, reading: Reading) -> None:
        """Settings from the newest saved LoRA's `ss_*` header where no config gave them; its progress."""
        models = self._models(folder)
        if not models:
            return
        meta = header_metadata(folder, models[-1])
        reading.tags[t.TAG_CHECKPOINTS] = ", ".join(m.rsplit("/", 1)[-1] for m in models)[:5000]
        have_config = bool(reading.params)
        for key, value in meta.items():
            if not key.startswith("ss_"):
                continue
            name = key[3:]
            if name in _BULKY or name in SECRETS or len(value) > 1000:
                continue
            if not have_config or name in IDENTITY:
                reading.params.setdefault(name, value)
        steps, total = _int(meta.get("ss_steps")), _int(meta.get("ss_max_train_steps"))
        if steps is not None:
            reading.max_step = steps
        if steps is not None and total and steps < COMPLETE * total:
            reading.outcome = (Outcome.INCOMPLETE, f"last saved LoRA {models[-1]} is at step {steps} of {total}")


def header_metadata(folder: Folder, rel: str) -> dict[str, str]:
    """The `__metadata__` of a `.safetensors` header; the tensors are never read."""
    from safetensors import safe_open

    folder.claimed.add(rel)
    try:
        with safe_open(str(folder.files[rel]), framework="numpy") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise ReadError(f"{rel}: not a readable .safetensors header ({type(exc).__name__})") from None


def merge_sections(data: Any, name: str) -> dict[str, Any]:
    """One level of settings, as sd-scripts reads a `--config_file`: each top-level table's keys
    merged in (a later table's key winning), plain top-level keys as they are."""
    if not isinstance(data, dict):
        raise ReadError(f"{name}: expected TOML tables or keys")
    merged: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "custom_attributes":
            merged.update(value)
        else:
            merged[key] = value
    return {k: v for k, v in merged.items() if not isinstance(v, dict)}


def read_console(text: str, reading: Reading) -> None:
    """Series, progress and outcome from sd-scripts' console output."""
    last_bar: Optional[tuple[int, int]] = None
    values: dict[tuple[str, int], float] = {}  # (key, step) -> the bar's last value at that step
    epoch, saved, nonfinite, stamps = None, False, None, []
    for line in re.split(r"[\r\n]+", text):
        if line[:1].isdigit() or line[:1] == "[":
            if (stamp := _STAMP.match(line)) is not None:
                stamps.append(stamp.group(1, 2))
        bar = _BAR.match(line)
        if bar:
            step, total = int(bar.group(1)), int(bar.group(2))
            last_bar = (step, total)
            for key, value in _POSTFIX.findall(bar.group(3)):
                values[(key, step)] = float(value)
                if nonfinite is None and not math.isfinite(float(value)):
                    nonfinite = f"{key}={value} at step {step}"
            continue
        if (match := _EPOCH.match(line)) is not None:
            epoch = (int(match.group(1)), int(match.group(2)))
        elif _SAVED.match(line):
            saved = True
    reading.series = [(key, value, step, None) for (key, step), value in values.items() if step > 0]
    if stamps:
        reading.first_ms, reading.last_ms = _ms(*stamps[0]), _ms(*stamps[-1])
    if last_bar:
        reading.max_step = max(reading.max_step or 0, last_bar[0])
        reading.params.setdefault("max_train_steps", last_bar[1])
    if epoch:
        reading.params.setdefault("max_train_epochs", epoch[1])
    evidence = Evidence(
        lines=re.split(r"[\r\n]+", text),
        nonfinite=f"progress bar shows {nonfinite}" if nonfinite else None,
        progress=last_bar,
        saved=saved,
        where="train.log",
    )
    outcome, reason = judge(evidence)
    reading.outcome = (outcome, reason) if outcome is not Outcome.OK else reading.outcome


def _ms(day: str, time: str) -> int:
    return int(datetime.fromisoformat(f"{day}T{time}+00:00").timestamp() * 1000)


def _int(value: Any) -> Optional[int]:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None
