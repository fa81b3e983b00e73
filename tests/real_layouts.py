"""TEST DATA: run folders as the real tools leave them, written by the real libraries where tunelog has them.

- `kohya_history`: an SDXL LoRA history as kohya-ss sd-scripts leaves it: `config.toml` (sectioned, as a
  user writes for `--config_file`, or flat, as `--output_config` dumps it), `train.log` from
  `accelerate launch ... | tee` (tqdm's `steps:` bar redrawn with carriage returns), TensorBoard events
  under `logs/<run>_<timestamp>/network_train/` (torch's SummaryWriter), `NAME-00000N.safetensors` with
  `ss_*` metadata (the safetensors package), and the user's `eval.json`. Built to trip a naive reader:
  05 is cut short at step 301 of 950 (no final save), 08 runs out of memory, 09's bar shows a NaN loss
  though its eval.json scores best of all, 04 reruns 03 with only names, paths and the seed changed, 11
  is scored on another eval set, 07 changes one key from 06's config while 06's exact twin 05b was cut
  short after it, and 02 moves rank and alpha together.
- `lightning_run`: `lightning_logs/version_N/hparams.yaml` + `metrics.csv` as Lightning's CSVLogger
  writes them (Lightning is no dependency here: the format follows its source).
"""

from __future__ import annotations

import json
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

T0 = datetime(2025, 2, 3, 9, 0, 0, tzinfo=timezone.utc)
TOTAL = 950
SECTIONS = {  # where sd-scripts' example configs put each key
    "model_arguments": ("pretrained_model_name_or_path", "v2"),
    "network_arguments": ("network_module", "network_dim", "network_alpha"),
    "optimizer_arguments": ("optimizer_type", "learning_rate", "unet_lr", "text_encoder_lr", "lr_scheduler"),
    "dataset_arguments": ("resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso"),
    "training_arguments": ("train_batch_size", "max_train_steps", "mixed_precision", "seed"),
    "saving_arguments": ("output_dir", "output_name", "save_every_n_steps", "save_model_as"),
    "logging_arguments": ("logging_dir", "log_prefix"),
}
BASE = {
    "pretrained_model_name_or_path": "/models/sd_xl_base_1.0.safetensors",
    "v2": False,
    "network_module": "networks.lora",
    "network_dim": 16,
    "network_alpha": 8,
    "optimizer_type": "AdamW8bit",
    "learning_rate": 0.0001,
    "unet_lr": 0.0001,
    "text_encoder_lr": 5e-05,
    "lr_scheduler": "cosine",
    "resolution": "1024,1024",
    "enable_bucket": True,
    "min_bucket_reso": 512,
    "max_bucket_reso": 2048,
    "train_batch_size": 2,
    "max_train_steps": TOTAL,
    "mixed_precision": "bf16",
    "seed": 42,
    "save_every_n_steps": 400,
    "save_model_as": "safetensors",
}
PRODIGY = {"optimizer_type": "Prodigy", "learning_rate": 1.0, "unet_lr": 1.0, "text_encoder_lr": 1.0}
RANK64 = {"network_dim": 64, "network_alpha": 32}
# name, config changes from BASE, score on the eval set (None: no eval.json), how it ends, config style, eval set
KOHYA_RUNS = [
    ("01_base", {}, 0.700, "ok", "sections", "portraits-v1"),
    ("02_dim32", {"network_dim": 32, "network_alpha": 16}, 0.740, "ok", "flat", "portraits-v1"),
    ("03_dim64", RANK64, 0.750, "ok", "sections", "portraits-v1"),
    ("04_dim64_again", {**RANK64, "seed": 1234}, 0.752, "ok", "flat", "portraits-v1"),
    ("05_prodigy", {**RANK64, **PRODIGY}, 0.780, "ok", "sections", "portraits-v1"),
    ("06_prodigy_cut", {**RANK64, **PRODIGY}, None, "killed", "sections", "portraits-v1"),
    ("07_constant", {**RANK64, **PRODIGY, "lr_scheduler": "constant"}, 0.790, "ok", "flat", "portraits-v1"),
    (
        "08_res1536_oom",
        {**RANK64, **PRODIGY, "lr_scheduler": "constant", "resolution": "1536,1536"},
        None,
        "oom",
        "sections",
        "portraits-v1",
    ),
    (
        "09_hot_lr",
        {**RANK64, **PRODIGY, "lr_scheduler": "constant", "unet_lr": 5.0},
        0.990,
        "nan",
        "sections",
        "portraits-v1",
    ),
    (
        "10_res768_buckets",
        {
            **RANK64,
            **PRODIGY,
            "lr_scheduler": "constant",
            "resolution": "768,768",
            "min_bucket_reso": 256,
            "max_bucket_reso": 1024,
        },
        0.800,
        "ok",
        "sections",
        "portraits-v1",
    ),
    (
        "11_res768_setB",
        {
            **RANK64,
            **PRODIGY,
            "lr_scheduler": "constant",
            "resolution": "768,768",
            "min_bucket_reso": 256,
            "max_bucket_reso": 1024,
        },
        0.950,
        "ok",
        "sections",
        "portraits-v2",
    ),
]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def _toml(config: dict, style: str) -> str:
    if style == "flat":  # `--output_config`: one table, keys sorted as vars(args) dumps them
        return "".join(f"{k} = {_toml_value(v)}\n" for k, v in sorted(config.items()))
    out, placed = [], set()
    for section, keys in SECTIONS.items():
        rows = [f"{k} = {_toml_value(config[k])}" for k in keys if k in config]
        placed |= set(keys)
        if rows:
            out.append(f"[{section}]\n" + "\n".join(rows) + "\n")
    rest = [f"{k} = {_toml_value(v)}" for k, v in config.items() if k not in placed]
    return ("\n".join(rest) + "\n\n" if rest else "") + "\n".join(out)


def _bar(step: int, loss: str) -> str:
    pct = int(100 * step / TOTAL)
    return f"steps: {pct:3d}%|{'#' * (pct // 10):<10}| {step}/{TOTAL} [{step // 60:02d}:{step % 60:02d}<00:00,  1.02s/it, avr_loss={loss}]"


def _console(name: str, start: datetime, last: int, end: str, final_loss: float) -> str:
    stamp = lambda minutes: (start + timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
    lines = [
        f"{stamp(0)} INFO     Loading settings from /work/{name}/config.toml...",
        f"{stamp(0)} INFO     create LoRA for Text Encoder 1:",
        f"{stamp(0)} INFO     create LoRA for Text Encoder: 264 modules.",
        f"{stamp(0)} INFO     create LoRA for U-Net: 722 modules.",
        f"{stamp(1)} INFO     running training / 学習開始",
        "  num train images * repeats / 学習画像の数×繰り返し回数: 400",
        "  num epochs / epoch数: 2",
        "  total optimization steps / 学習ステップ数: 950",
        "",
        "epoch 1/2",
    ]
    bar = []
    for step in range(1, last + 1, 10):
        loss = "nan" if end == "nan" and step > 200 else f"{0.12 - 0.03 * step / TOTAL:.4f}"
        bar.append(_bar(step, loss))
    if end == "oom":
        lines.append("\r".join(bar[:3]))
        lines += [
            "Traceback (most recent call last):",
            '  File "/work/sd-scripts/sdxl_train_network.py", line 185, in <module>',
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 3.00 GiB",
        ]
        return "\n".join(lines) + "\n"
    lines.append("\r".join(bar) + "\r" + _bar(last, "nan" if end == "nan" else f"{final_loss:.4f}"))
    if last >= 400:
        lines.append(f"saving checkpoint: /out/{name}/{name}-step00000400.safetensors")
    if end in ("ok", "nan"):
        lines += [
            "epoch 2/2",
            f"saving checkpoint: /out/{name}/{name}.safetensors",
            f"{stamp(60)} INFO     model saved.",
        ]
    return "\n".join(lines) + "\n"


def _metadata(name: str, config: dict, steps: int, started: datetime) -> dict[str, str]:
    meta = {f"ss_{k}": str(v) for k, v in config.items() if k not in ("output_dir", "logging_dir", "log_prefix")}
    meta.update(
        {
            "ss_steps": str(steps),
            "ss_max_train_steps": str(TOTAL),
            "ss_optimizer": f"bitsandbytes.optim.{config['optimizer_type']}",
            "ss_session_id": str(zlib.crc32(name.encode())),
            "ss_training_started_at": str(started.timestamp()),
            "ss_tag_frequency": json.dumps({"img": {"portrait": 40}}),
            "sshs_model_hash": "0" * 64,
        }
    )
    return meta


def kohya_history(root: Path) -> Path:
    import torch
    from safetensors.torch import save_file
    from torch.utils.tensorboard import SummaryWriter

    for i, (name, changes, score, end, style, eval_set) in enumerate(KOHYA_RUNS):
        folder = root / name
        folder.mkdir(parents=True)
        start = T0 + timedelta(hours=2 * i)
        config = {
            **BASE,
            **changes,
            "output_dir": f"/out/{name}",
            "output_name": name,
            "logging_dir": f"/out/{name}/logs",
            "log_prefix": name,
        }
        (folder / "config.toml").write_text(_toml(config, style), encoding="utf-8")
        last = {"ok": TOTAL, "nan": TOTAL, "killed": 301, "oom": 21}[end]
        final_loss = 0.09 - 0.002 * i
        (folder / "train.log").write_text(_console(name, start, last, end, final_loss), encoding="utf-8")
        events = folder / "logs" / f"{name}_{start:%Y%m%d%H%M%S}" / "network_train"
        writer = SummaryWriter(log_dir=str(events))
        for step in range(50, last + 1, 50):
            loss = float("nan") if end == "nan" and step > 200 else 0.12 - 0.03 * step / TOTAL
            wall = (start + timedelta(seconds=3 * step)).timestamp()
            writer.add_scalar("loss/current", loss, step, walltime=wall)
            writer.add_scalar("loss/average", loss, step, walltime=wall)
            writer.add_scalar("lr/unet", float(config["unet_lr"]), step, walltime=wall)
        writer.close()
        tensors = {"lora_unet_down.lora_down.weight": torch.zeros(4, 4)}
        for saved in [400] if last >= 400 else []:
            save_file(tensors, folder / f"{name}-step{saved:08d}.safetensors", _metadata(name, config, saved, start))
        if end in ("ok", "nan"):
            save_file(tensors, folder / f"{name}.safetensors", _metadata(name, config, TOTAL, start))
        if score is not None:
            record = {"score": score, "eval_set": eval_set, "file": f"{name}.safetensors", "n_images": 24}
            (folder / "eval.json").write_text(json.dumps(record), encoding="utf-8")
    return root


def lightning_run(folder: Path, epochs_logged: int, max_epochs: int = 10) -> Path:
    """A Lightning run's log folder (version_0 an abandoned start, version_1 the real one)."""
    for version, n in ((0, 1), (1, epochs_logged)):
        where = folder / "lightning_logs" / f"version_{version}"
        where.mkdir(parents=True)
        (where / "hparams.yaml").write_text(
            "args: !!python/object:argparse.Namespace\n  lr: 0.001\nlr: 0.001\nhidden: 256\nseed: 7\n"
            f"max_epochs: {max_epochs}\n",
            encoding="utf-8",
        )
        rows = ["epoch,step,train_loss,val_loss"]
        for epoch in range(n):
            rows.append(f"{epoch},{(epoch + 1) * 100 - 1},{1.0 / (epoch + 1):.4f},")
            rows.append(f"{epoch},{(epoch + 1) * 100 - 1},,{1.2 / (epoch + 1):.4f}")
        (where / "metrics.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder
