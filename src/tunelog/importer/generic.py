"""The hand-rolled layout: a config (JSON, YAML, `key=value` or `--key value` args) and a text log.

Runs last: files an ecosystem reader took (a kohya `train.log`, a Lightning `hparams.yaml`) are
left to it. Of the log's numbers only those that read as metrics count (item 4 of the import
contract): a key seen on several lines, on a line that names its step, a result line
(`Final eval loss: 1.2`) or a metric-like name. `create LoRA for Text Encoder: 264 modules` is
start-up chatter, not a final metric named `Encoder`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from typing import Any

from ..integrations.hf_names import metric_name
from ..logs.console import trainer_series
from ..logs.judge import judge_log
from ..logs.parse import LogParser
from ..records.base import NONE, RUN, WEAK, Folder, ReadError, Reading, flat
from ..vocabulary import Outcome

CONFIG_FILES = (
    "args.json",
    "config.json",
    "hparams.json",
    "config.yaml",
    "config.yml",
    "hparams.yaml",
    "args.yaml",
    "args.txt",
    "config.txt",
    "args",
)
RECORD_LOGS = ("trainer_state.json", "trainer_log.jsonl")  # a trainer's record, read before this reader runs
LOG_FILES = ("train.log", "training.log", "log.txt", "output.log", "running_log.txt")  # the last: LLaMA-Factory's UI
NOTE_FILES = ("notes.md", "NOTES.md", "notes.txt", "NOTES.txt", "README.md")
LINEAGE_KEYS = ("resume", "init_from", "based_on", "from_checkpoint", "load_from", "pretrained_from", "resume_from")
# keys that name the run or where it wrote, never what it did: recorded, not compared
IDENTITY_KEYS = (
    "output_dir",
    "output_name",
    "logging_dir",
    "log_dir",
    "log_prefix",
    "run_name",
    "exp_name",
    "experiment_name",
    "save_dir",
    "checkpoint_dir",
    "wandb_run_name",
    "timestamp",
)
_METRIC_NAME = re.compile(
    r"(?i)loss|acc|wer|cer|per\b|per_|bleu|rouge|f1|score|ppl|perplexity|auc|mse|mae|rmse|fid|clip|psnr|ssim|lr\b|learning_rate"
)
_RESULT_NAME = re.compile(r"^(?:final|best|test|result)")
_TRAINER_CONSOLE = re.compile(r"Total optimization steps|Num update steps per epoch")  # a Trainer's own start-up


class GenericReader:
    name = "generic"

    def __init__(self, parser: LogParser):
        self.parser = parser

    def detect(self, folder: Folder) -> bool:
        return self._config(folder) is not None or self._log(folder) is not None

    def signature(self, folder: Folder) -> int:
        """A config with a training log beside it is a run; either alone (a model's config.json, a
        project's log) only where no run lies below."""
        config, log = self._config(folder), self._log(folder)
        return RUN if config and log else WEAK if config or log else NONE

    def _config(self, folder: Folder):
        name = folder.top(*CONFIG_FILES)
        return name if name and name not in folder.claimed else None

    def _log(self, folder: Folder):
        name = folder.top(*LOG_FILES) or next(iter(sorted(r for r in folder.glob("*.log") if "/" not in r)), None)
        return name if name and name not in folder.claimed else None

    def read(self, folder: Folder) -> Reading:
        config, log_name = self._config(folder), self._log(folder)
        reading = Reading()
        if config:
            reading.params = read_config(folder, config)
            reading.files.append(folder.files[config])
            reading.identity = {k for k in reading.params if k.rsplit(".", 1)[-1].lower() in IDENTITY_KEYS}
            if is_model_config(reading.params):
                _as_one_model_config(reading)
            reading.lineage = [
                v for k, v in reading.params.items() if any(x in k.lower() for x in LINEAGE_KEYS) and isinstance(v, str)
            ]
        note = folder.top(*NOTE_FILES)
        if note and note not in folder.claimed:  # a Trainer's model card is its record's, not the user's note
            reading.note = folder.text(note, 1 << 20).strip()
        if log_name is None:
            reading.problem = "no log file (train.log, *.log)"
            return reading
        try:
            text = folder.text(log_name)
        except ReadError as exc:
            raise ReadError(f"log {exc}") from None
        reading.files.append(folder.files[log_name])
        log = self.parser.parse_text(text)
        if any(rel.endswith(RECORD_LOGS) for rel in folder.claimed):
            # the trainer's own record was read: the console saved beside it says how the run ended, and its
            # rounded numbers at guessed steps would only duplicate the record's series
            outcome = judge_log(text, log, reading.params)
            reading.outcome = outcome if outcome[0] is not Outcome.OK else None
            return reading
        if not log.metric_lines:
            reading.problem = f"log {log_name}: no metric lines in {log.lines} lines"
            return reading
        trainer = trainer_series(text.splitlines(), self.parser) if _TRAINER_CONSOLE.search(text) else None
        if trainer:  # a saved Trainer console: its log dicts at the Trainer's steps, under tunelog's names
            reading.series = [(metric_name(k), v, step, ms) for k, v, step, ms in trainer]
            reading.first_ms, reading.last_ms = log.first_ms, log.last_ms
            reading.max_step = max(step for _, _, step, _ in trainer)
            outcome = judge_log(text, log, reading.params)
            reading.outcome = outcome if outcome[0] is not Outcome.OK else None
            return reading
        kept = {k for k, n in log.counts.items() if n > 1 or k in log.stepped or _metric_like(k)}
        reading.series = [p for p in log.series if p[0] in kept]
        reading.first_ms, reading.last_ms, reading.max_step = log.first_ms, log.last_ms, log.max_step
        outcome = judge_log(text, log, reading.params)
        reading.outcome = outcome if outcome[0] is not Outcome.OK else None
        return reading


def _metric_like(key: str) -> bool:
    return bool(_METRIC_NAME.search(key) or _RESULT_NAME.match(key))


# what a saved model's config.json (transformers' PretrainedConfig) says of itself
_MODEL_CONFIG_MARKS = ("architectures", "model_type", "transformers_version")
MODEL_CONFIG_PARAM = "model.config"


def is_model_config(params: dict[str, Any]) -> bool:
    """A saved model's own config.json (architecture, vocabulary, ids), not a run's training settings."""
    return sum(1 for mark in _MODEL_CONFIG_MARKS if mark in params) >= 2


def _as_one_model_config(reading: Reading) -> None:
    """A model's config is one setting, not 45: every key recorded under `model_config.` and never compared
    (nor the environment's `transformers_version`), and one `model.config` param (`model_type`, key count and
    a digest) that changes when the model does."""
    params = reading.params
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    kept = {f"model_config.{k}": v for k, v in params.items()}
    summary = f"{params.get('model_type', 'model')}: {len(params)} keys, {digest}"
    reading.params = {MODEL_CONFIG_PARAM: summary, **kept}
    reading.identity = set(kept)


def read_config(folder: Folder, name: str) -> dict[str, Any]:
    if name.endswith((".json", ".yaml", ".yml")):
        data = folder.data(name)
    else:
        data = _args(folder.text(name, 1 << 20))
    if not isinstance(data, dict):
        raise ReadError(f"config {name}: expected a mapping of settings")
    return flat(data)


def _args(text: str) -> dict[str, Any]:
    """`key=value` lines, or a command line of `--key value` / `--flag` tokens."""
    out: dict[str, Any] = {}
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError as exc:
        raise ReadError(f"args: {exc}") from None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if "=" in tok:
            key, value = tok.lstrip("-").split("=", 1)
            out[key] = value
        elif tok.startswith("--"):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt is not None and not nxt.startswith("--"):
                out[tok[2:]] = nxt
                i += 1
            else:
                out[tok[2:]] = "true"
        i += 1
    return out
