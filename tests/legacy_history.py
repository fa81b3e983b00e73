"""TEST DATA: a legacy speech-decoder history, one folder per run (`args.json` or `args.txt` and a
`train.log` in one of several styles), shared by the importer and changelog tests."""

import json
import math
from datetime import datetime, timedelta

BASE = {
    "lr": 0.001,
    "batch_size": 16,
    "optimizer": "adam",
    "scheduler": "noam",
    "ema": False,
    "dropout": 0.1,
    "layers": 4,
    "warmup": 4000,
}
T0 = datetime(2024, 3, 1, 8, 0, 0)

# name, config (from BASE), final val_loss (None: none logged), log style, extra log text
HISTORY = [
    ("01_baseline", {}, 2.00, "kv", ""),
    ("02_lr_5e-3", {"lr": 0.005}, float("nan"), "kv", ""),
    ("03_lr_2e-3", {"lr": 0.002}, 2.10, "kv", ""),
    ("04_recovery", {"batch_size": 32, "resume_from": "../01_baseline/checkpoint_best.pt"}, 1.90, "kv", ""),
    ("05_cosine", {"batch_size": 32, "scheduler": "cosine"}, 1.80, "hf", ""),
    ("06_ema", {"batch_size": 32, "scheduler": "cosine", "ema": True, "ema_decay": 0.999}, 1.70, "tqdm", ""),
]
R06 = HISTORY[-1][1]
HISTORY += [
    ("07_ema_repeat", dict(R06), 2.90, "kv", ""),
    ("08_dropout_0.2", {**R06, "dropout": 0.2}, 1.65, "kv", ""),
    ("09_layers_6", {**R06, "dropout": 0.2, "layers": 6}, 1.60, "batch", ""),
    (
        "10_batch_128",
        {**R06, "dropout": 0.2, "layers": 6, "batch_size": 128},
        None,
        "kv",
        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n",
    ),
    ("11_batch_64", {**R06, "dropout": 0.2, "layers": 6, "batch_size": 64}, 1.55, "kv", ""),
]
R11 = HISTORY[-1][1]
HISTORY += [
    ("12_warmup_8000", {**R11, "warmup": 8000}, 1.50, "batch", ""),
    ("13_lr_5e-4", {**R11, "warmup": 8000, "lr": 0.0005}, 1.45, "hf", ""),
    ("14_lr_2e-4", {**R11, "warmup": 8000, "lr": 0.0002}, 1.60, "kv", ""),
]
R13 = HISTORY[-2][1]
HISTORY += [
    ("15_no_ema", {k: v for k, v in {**R13, "ema": False}.items() if k != "ema_decay"}, 1.90, "kv", ""),
    ("16_final_tune", {**R13, "dropout": 0.15}, 1.40, "kv", "Final val_loss: 1.40\n"),
    ("17_final_repeat", {**R13, "dropout": 0.15}, 1.41, "kv", ""),
    ("18_linear_sched", {**R13, "dropout": 0.15, "scheduler": "linear"}, 1.48, "tqdm", ""),
    ("19_layers_8_args", {**R13, "dropout": 0.15, "layers": 8}, 1.43, "args", ""),
]


def _log(name: str, start: datetime, final: float | None, style: str, extra: str) -> str:
    lines = [f"{start:%Y-%m-%d %H:%M:%S} INFO starting {name}"]
    vals = [3.0, 2.5, final] if final is not None else [3.0]
    for i, val in enumerate(vals, start=1):
        ts = start + timedelta(minutes=10 * i)
        loss = val if val is None or math.isnan(val) else val + 0.1
        step = 1000 * i
        if style == "hf":
            lines.append(f"{ts:%Y-%m-%d %H:%M:%S} {{'loss': {loss}, 'learning_rate': 0.0005, 'step': {step}}}")
            lines.append(f"{ts:%Y-%m-%d %H:%M:%S} {{'val_loss': {val}, 'epoch': {i}.0, 'step': {step}}}")
        elif style == "tqdm":
            lines.append(f"Epoch {i}: 100%|##########| 500/500 [01:00<00:00, 8.3it/s, loss={loss}, val_loss={val}]")
        elif style == "batch":
            lines.append(f"{ts:%Y-%m-%d %H:%M:%S} batch {step}, loss: {loss}")
            lines.append(f"{ts:%Y-%m-%d %H:%M:%S} batch {step}, val_loss: {val}")
        else:
            lines.append(f"{ts:%Y-%m-%d %H:%M:%S} step={step} loss={loss} val_loss={val}")
    lines.append(f"{start + timedelta(minutes=45):%Y-%m-%d %H:%M:%S} INFO done")
    return "\n".join(lines) + "\n" + extra


def build_tree(root):
    for i, (name, overrides, final, style, extra) in enumerate(HISTORY):
        folder = root / name
        folder.mkdir(parents=True)
        config = {**BASE, **overrides}
        if style == "args":
            (folder / "args.txt").write_text(" ".join(f"--{k} {v}" for k, v in config.items()))
        else:
            (folder / "args.json").write_text(json.dumps(config))
        (folder / "train.log").write_text(_log(name, T0 + timedelta(hours=i), final, style, extra))
    (root / "04_recovery" / "notes.md").write_text("Resumed from the baseline's best checkpoint.")
    broken = root / "20_broken_log"
    broken.mkdir()
    (broken / "args.json").write_text(json.dumps(BASE))
    (broken / "train.log").write_bytes(b"\x89PNG\x00\xff\xfe garbage")
    return root
