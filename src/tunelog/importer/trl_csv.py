"""TRL runs that left their log history as `training_metrics.csv` beside the adapter (a DPO or PPO LoRA run's
output folder): one row per logging step, a `step` column, `train/...` columns, empty cells for what a row did
not log. TRL's PPO logs `nan` for a statistic with nothing to average at that step (its policy loss and
clipfrac, on and off all run long, the last row included): such NaN cells are left out; a column whose last
STUCK values are all non-finite went non-finite for good and keeps them (the judge reads it as diverged).
"""

from __future__ import annotations

import math

from ..records.base import NONE, RUN, Folder, Reading
from .lightning import read_metrics_csv

CSV = "training_metrics.csv"
STUCK = 3  # a column that ends in this many non-finite values in a row went non-finite for good: diverged


class TrlCsvReader:
    name = "trl-csv"

    def detect(self, folder: Folder) -> bool:
        return CSV in folder.files

    def signature(self, folder: Folder) -> int:
        return RUN if CSV in folder.files and folder.top("adapter_config.json", "README.md") else NONE

    def read(self, folder: Folder) -> Reading:
        reading = Reading()
        series, reading.max_step = read_metrics_csv(folder.text(CSV), CSV)
        trailing: dict[str, int] = {}  # each column's run of non-finite values at its end
        for key, value, _, _ in series:
            trailing[key] = 0 if math.isfinite(value) else trailing.get(key, 0) + 1
        stuck = {k for k, n in trailing.items() if n >= STUCK}
        reading.series = [p for p in series if math.isfinite(p[1]) or p[0] in stuck]
        reading.files.append(folder.files[CSV])
        return reading
