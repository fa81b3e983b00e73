"""The model card every Trainer writes (`README.md`): its "Training hyperparameters" list says what ran.

transformers' `create_model_card` lists `- learning_rate: 0.001`, `- seed: 42`, `- optimizer: Use
OptimizerNames.ADAMW_TORCH_FUSED with betas=...`, `- lr_scheduler_type: cosine`, `- training_steps: 40`
(or `num_epochs`), batch sizes and mixed precision. Read under tunelog's names, so a run's learning rate is
known where nothing else records it; a `trainer_state.json` beside it wins where both say (the merge order).
"""

from __future__ import annotations

import re
from typing import Any

from .base import NONE, Folder, Reading, scalar

CARD = "README.md"
_SECTION = re.compile(r"^#+\s*Training hyperparameters\s*$", re.M)
_ITEM = re.compile(r"^-\s+([A-Za-z_][\w ]*?):\s*(.+?)\s*$")
_OPTIMIZER = re.compile(r"(?:OptimizerNames\.)?([A-Za-z][\w]*)")
# the card's names -> tunelog's (what the spec calls them); the rest under `card.NAME`
NAMES = {
    "learning_rate": "train.learning_rate",
    "train_batch_size": "train.batch_size",
    "seed": "train.seed",
    "optimizer": "train.optimizer",
    "lr_scheduler_type": "train.schedule",
    "lr_scheduler_warmup_ratio": "train.warmup_ratio",
    "lr_scheduler_warmup_steps": "train.warmup_steps",
    "training_steps": "train.max_steps",
    "num_epochs": "train.epochs",
    "gradient_accumulation_steps": "train.grad_accum",
    "mixed_precision_training": "train.precision",
}
IDENTITY = {"card.distributed_type", "card.num_devices"}  # where it ran, not how it learned


def card_params(text: str) -> dict[str, Any]:
    """The hyperparameters list of a model card, under tunelog's names; {} where the card has none."""
    match = _SECTION.search(text)
    if not match:
        return {}
    out: dict[str, Any] = {}
    for line in text[match.end() :].splitlines():
        if line.startswith("#"):
            break
        item = _ITEM.match(line.strip())
        if not item:
            continue
        key, raw = item.group(1).strip().replace(" ", "_"), item.group(2)
        value = _optimizer(raw) if key == "optimizer" else scalar(raw)
        if key == "lr_scheduler_warmup_steps" and isinstance(value, float) and value < 1:
            key = "lr_scheduler_warmup_ratio"  # transformers 5 takes a warmup ratio as fractional warmup_steps
        out[NAMES.get(key, f"card.{key}")] = value
    return out


def _optimizer(raw: str) -> str:
    """`Use OptimizerNames.ADAMW_TORCH_FUSED with betas=...` -> `adamw_torch_fused`; `Adam with betas` -> `adam`."""
    text = raw[4:] if raw.startswith("Use ") else raw
    found = _OPTIMIZER.match(text)
    return found.group(1).lower() if found else raw


class ModelCardReader:
    """A folder's `README.md` when it is a Trainer's model card (its hyperparameters list)."""

    name = "model-card"

    def detect(self, folder: Folder) -> bool:
        return CARD in folder.files

    def signature(self, folder: Folder) -> int:
        return NONE  # a card is part of a run, never a run by itself

    def read(self, folder: Folder) -> Reading:
        reading = Reading()
        try:
            params = card_params(folder.text(CARD, 1 << 20))
        except ValueError:
            return reading
        if not params:
            folder.claimed.discard(CARD)  # a README that is no model card stays the user's note
        else:
            reading.params = params
            reading.identity = IDENTITY & set(params)
            reading.files.append(folder.files[CARD])
        return reading
