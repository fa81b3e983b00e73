"""`tunelog init`: a commented starter spec for your own model and data, that passes `lint`.

Three presets: `lora-small` (a small model, full-precision base, CPU or GPU), `qlora-7b` (a 7B
model on one GPU: 4-bit base weights, bf16, an 8-bit optimizer at a learning rate 8-bit states
survive) and `command` (your own training script, driven through `trainer.argv`). Each has named
configs with their purpose, a search space with a derived alpha, and rules from lessons people
keep relearning (8-bit optimizers go NaN at high learning rates; alpha == r with a high LR).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

PRESETS = ("lora-small", "qlora-7b", "command")

_HEAD = """# tunelog spec: written by `tunelog init`; every field is documented in docs/spec.md.
# Check it with `tunelog lint {spec}`, then `tunelog train {spec} --config baseline`,
# `tunelog probe {spec}` for the fastest batch that fits, `tunelog sweep {spec} --quick`.
model:
  name: {model}{model_extra}

data:
  train: {data}          # one sample per line, or JSONL with `text_field` or chat `messages`
  {eval_line}
  max_length: {max_length}{prompts}

lora:
  r: {r}
  alpha: {alpha}           # alpha / r = 2: the usual scale
  dropout: 0.05
  target_modules: auto     # peft's default for the architecture; or all-linear, or a list

train:
  learning_rate: {lr}
  schedule: warmup_cosine
  warmup_ratio: 0.05
  epochs: {epochs}                # {epochs_why}
  batch_size: {batch}
  grad_accum: {accum}
  optimizer: {optimizer}
  precision: {precision}
  eval_every: {eval_every}            # a few evaluations per run
{trainer}
tracking:
  experiment: {experiment}
  metric: {metric}
  direction: minimize

configs:
  baseline:
    purpose: The reference point every other config is compared with.
    strategy: The spec as written.
  wider:
    overrides: {{lora.r: {r2}, lora.alpha: {alpha2}}}
    purpose: More adapter capacity.
    strategy: Double the rank, keep alpha / r at 2.
  gentler:
    overrides: {{train.learning_rate: {lr_low}}}
    purpose: The same adapter at half the learning rate, for when the loss is noisy.

rules:
  - name: 8bit-high-lr
    reject: "train.optimizer == 'adamw8bit' and peak_lr > 1.2e-4"
    reason: 8-bit optimizer states go NaN at high learning rates with LoRA
  - name: alpha-equals-r-at-high-lr
    reject: "lora.alpha == lora.r and peak_lr > 1e-4"
    reason: a scale of 1 with a high LR overshoots; use alpha = 2r or lower the LR

search:
  n_trials: 20
  params:
    train.learning_rate: {{type: float, min: {lr_min}, max: {lr_max}, log: true}}
    lora.r: {{type: categorical, choices: [{r}, {r2}, {r4}]}}
    alpha_ratio: {{type: float, min: 0.5, max: 4.0}}
  derived:
    lora.alpha: lora.r * alpha_ratio
  quick:
    n_trials: 4
    overrides: {{train.max_steps: 50}}
"""

_COMMAND = """
trainer:
  type: command            # your own script; tunelog renders argv, parses its output, logs its metrics
  args: {{network_dim: 32}}  # the script's own knobs: sweep or probe them as trainer.args.NAME
  argv: ["{{python}}", train.py, --lr, "{{train.learning_rate}}", --batch_size, "{{train.batch_size}}",
         --network_dim, "{{trainer.args.network_dim}}", --output_dir, "{{output_dir}}"]
"""

_QLORA_MODEL = """
  load_in_4bit: true      # QLoRA: 4-bit base weights (bitsandbytes, CUDA)
  gradient_checkpointing: true"""


TARGET_STEPS = 100  # optimizer steps a starter run aims at: enough for a small dataset's style to show
EVAL_NAMES = ("eval", "valid", "validation", "val", "dev", "test", "held_out")


def sized(n_samples: Optional[int], samples_per_step: int) -> tuple[int, int, str]:
    """(epochs, eval_every, why): enough epochs for about TARGET_STEPS optimizer steps (at most 20 passes over
    the data), evaluated about four times per run."""
    if not n_samples:
        return 1, 50, "the data's size is unknown here: set it so the run has 100+ optimizer steps"
    per_epoch = max(1, -(-n_samples // samples_per_step))
    epochs = min(20, max(1, -(-TARGET_STEPS // per_epoch)))
    total = epochs * per_epoch
    why = f"{n_samples} samples -> {per_epoch} steps an epoch; {total} optimizer steps in all"
    return epochs, max(1, total // 4), why


def count_rows(path: Path) -> Optional[int]:
    """Samples in a data file without reading it as the trainer does: a JSON array's items, else its lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            return len(json.loads(text))
        except ValueError:
            return None
    return sum(1 for line in text.splitlines() if line.strip()) or None


def eval_beside(train: Path) -> Optional[Path]:
    """A held-out file next to the training file (`eval.jsonl` beside `train.jsonl`), or None."""
    for name in EVAL_NAMES:
        for suffix in dict.fromkeys((train.suffix, ".jsonl", ".json", ".txt")):
            candidate = train.with_name(name + suffix)
            if candidate != train and candidate.is_file():
                return candidate
    return None


def sample_prompts(path: Path, n: int = 2) -> list[str]:
    """The first `n` questions of a chat or instruction file (a user turn, an alpaca `instruction`): what
    `samples.md` shows answered before and after training. Held-out questions where an eval file exists."""
    found: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return found
    rows = json.loads(text) if path.suffix == ".json" and text.lstrip().startswith("[") else None
    for row in rows if isinstance(rows, list) else _json_lines(text):
        question = _question(row)
        if question and question not in found:
            found.append(question)
        if len(found) == n:
            break
    return found


def _json_lines(text: str) -> list:
    out = []
    for line in text.splitlines()[:200]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _question(row: object) -> Optional[str]:
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("messages"), list):
        users = [m.get("content") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        return users[0] if users and isinstance(users[0], str) and len(users[0]) <= 200 else None
    question = row.get("instruction") or row.get("prompt")
    return question if isinstance(question, str) and len(question) <= 200 else None


def starter_spec(
    model: str,
    data: str,
    preset: str,
    spec_name: str,
    experiment: str,
    gguf: Optional[str] = None,
    n_samples: Optional[int] = None,
    eval_file: Optional[str] = None,
    prompts: Optional[list[str]] = None,
) -> str:
    """The starter spec's text for `preset`; with `gguf`, the model's weights are that GGUF file; sized from the
    data's `n_samples`, evaluated on `eval_file` where one sits beside the data."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}; accepted: {', '.join(PRESETS)}")
    qlora = preset == "qlora-7b"
    gguf_line = f"\n  gguf_file: {json.dumps(gguf)}  # converted once to safetensors (~/.cache/tunelog)" if gguf else ""
    values = {
        "spec": spec_name,
        "model": json.dumps(model),
        "model_extra": gguf_line + (_QLORA_MODEL if qlora else ""),
        "data": json.dumps(data),
        "max_length": 1024 if qlora else 256,
        "r": 16 if qlora else 8,
        "alpha": 32 if qlora else 16,
        "r2": 32 if qlora else 16,
        "r4": 64 if qlora else 32,
        "alpha2": 64 if qlora else 32,
        "lr": "1.0e-4" if qlora else "2.0e-4",
        "lr_low": "5.0e-5" if qlora else "1.0e-4",
        "lr_min": "2.0e-5" if qlora else "5.0e-5",
        "lr_max": "1.2e-4" if qlora else "5.0e-4",
        "batch": 4 if qlora else 8,
        "accum": 4 if qlora else 1,
        "optimizer": "adamw8bit" if qlora else "adamw",
        "precision": "bf16" if qlora else "fp32",
        "trainer": _COMMAND.format() if preset == "command" else "",
        "experiment": json.dumps(experiment),
        "metric": "loss" if preset == "command" else ("eval/loss" if eval_file else "train/final_loss"),
    }
    values["epochs"], values["eval_every"], values["epochs_why"] = sized(
        n_samples, int(values["batch"]) * int(values["accum"])
    )
    values["eval_line"] = (
        f"eval: {json.dumps(eval_file)}   # held out: gives eval/loss, the headline metric below"
        if eval_file
        else "# eval: held_out.txt   # a held-out file gives eval/loss; then set tracking.metric: eval/loss"
    )
    values["prompts"] = (
        "\n  sample_prompts:        # answered before and after training, greedy: the run's samples.md\n"
        + "\n".join(f"    - {json.dumps(p)}" for p in prompts)
        if prompts and preset != "command"
        else ""
    )
    return _HEAD.format(**values)


def write_starter(path: Path, model: str, data: str, preset: str, force: bool, gguf: Optional[str] = None) -> Path:
    """Writes the starter spec; refuses to overwrite a file unless `force`. Data paths are kept relative to
    the spec's folder when they are inside it, so the project can move."""
    from ..errors import TunelogError

    if path.exists() and not force:
        raise TunelogError(f"{path} exists; pass --force to overwrite it")
    data_path = Path(data).resolve()
    try:
        data = str(data_path.relative_to(path.parent.resolve()))
    except ValueError:
        data = str(data_path)
    held_out = eval_beside(data_path)
    eval_file = None
    if held_out is not None:
        try:
            eval_file = str(held_out.relative_to(path.parent.resolve()))
        except ValueError:
            eval_file = str(held_out)
    # named after what it trains: the model and the data (the output file's name said nothing: `spec`)
    leaf = Path(model.rstrip("/")).name or "model"
    experiment = re.sub(r"[^\w.-]+", "-", f"{leaf}-{data_path.stem}").strip("-")
    prompts = sample_prompts(held_out or data_path)
    text = starter_spec(model, data, preset, path.name, experiment, gguf, count_rows(data_path), eval_file, prompts)
    path.write_text(text)
    return path
