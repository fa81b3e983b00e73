"""Hugging Face Trainer's metric keys under tunelog's names: one map, shared by the callback (a live
Trainer) and the importer (a Trainer's output folder), so the same run reads the same either way."""

from __future__ import annotations

_TRAIN_NAMES = {
    "loss": "train/loss",
    "learning_rate": "train/lr",
    "grad_norm": "train/grad_norm",
    "epoch": "train/epoch",
}
# a split's results: Trainer prefixes evaluate(), predict() and a test set's numbers with the split's name
_SPLITS = ("eval", "test", "predict")


def metric_name(key: str, summary: bool = False) -> str:
    """`eval_loss` -> `eval/loss`, `test_f1` -> `test/f1`, `predict_loss` -> `predict/loss`, `loss` ->
    `train/loss`; a final summary's `train_loss` (the mean over the run) -> `train/mean_loss`."""
    for split in _SPLITS:
        if key.startswith(split + "_"):
            return f"{split}/{key[len(split) + 1 :]}"
    if summary and key == "train_loss":
        return "train/mean_loss"
    if key.startswith("train_"):
        return f"train/{key[6:]}"
    return _TRAIN_NAMES.get(key, f"train/{key}")
