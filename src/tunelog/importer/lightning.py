"""PyTorch Lightning logger folders: `hparams.yaml` + `metrics.csv` (CSVLogger; TensorBoardLogger's
events are the TensorBoard reader's), directly in the run folder or as `lightning_logs/version_N/`
(the newest version; a LightningCLI `config.yaml` beside it gives the trainer's settings).

`metrics.csv` has one row per logging call with empty cells for what that call did not log; each
column is a series by its `step` column. Lightning's hparams.yaml may hold Python tags
(`!!python/object:argparse.Namespace`): they are read as plain data, never constructed.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Optional

from ..records.base import NONE, RUN, Folder, ReadError, Reading, flat

_VERSION = re.compile(r"(?:^|/)version_(\d+)/metrics\.csv$")
IDENTITY = {"save_dir", "default_root_dir", "name", "version", "seed", "seed_everything", "ckpt_path", "log_dir"}


class LightningReader:
    name = "lightning"

    def detect(self, folder: Folder) -> bool:
        return self._dir(folder) is not None

    def signature(self, folder: Folder) -> int:
        """A version folder of its own (`hparams.yaml` + `metrics.csv`); each `version_N` is a run."""
        return RUN if "metrics.csv" in folder.files and "hparams.yaml" in folder.files else NONE

    def _dir(self, folder: Folder) -> Optional[str]:
        """'' for the folder itself, else `…/version_N` with the highest N that has a metrics.csv."""
        if "metrics.csv" in folder.files and "hparams.yaml" in folder.files:
            return ""
        versions = [(int(m.group(1)), rel.rsplit("/", 1)[0]) for rel in folder.files if (m := _VERSION.search(rel))]
        return max(versions)[1] if versions else None

    def read(self, folder: Folder) -> Reading:
        where = self._dir(folder)
        prefix = f"{where}/" if where else ""
        reading = Reading(epoch_base=1)  # Lightning's `epoch` column counts from 0: epoch 0 of 1 is the whole run
        for name in (f"{prefix}config.yaml", "config.yaml", f"{prefix}hparams.yaml"):
            if name in folder.files and name not in folder.claimed:
                data = folder.data(name)
                if isinstance(data, dict):
                    reading.params.update({k: v for k, v in flat(data).items() if k not in reading.params})
                reading.files.append(folder.files[name])
        reading.identity = {k for k in reading.params if k.rsplit(".", 1)[-1] in IDENTITY}
        csv_name = f"{prefix}metrics.csv"
        reading.files.append(folder.files[csv_name])
        reading.series, reading.max_step = read_metrics_csv(folder.text(csv_name), csv_name)
        return reading


def read_metrics_csv(text: str, name: str) -> tuple[list, Optional[int]]:
    """Every numeric column of a CSVLogger file as a series by `step` (the row number where none)."""
    rows = csv.DictReader(io.StringIO(text))
    if not rows.fieldnames:
        raise ReadError(f"{name}: no header row")
    series, max_step = [], None
    for i, row in enumerate(rows):
        step = _float(row.get("step"))
        at = int(step) if step is not None else i
        max_step = at if max_step is None else max(max_step, at)
        for key, cell in row.items():
            if key in (None, "step") or cell in (None, ""):
                continue
            value = _float(cell)
            if value is not None:
                series.append((key, value, at, None))
    return series, max_step


def _float(cell) -> Optional[float]:
    try:
        return float(cell)
    except (TypeError, ValueError):
        return None
