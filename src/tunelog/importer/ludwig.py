"""Ludwig experiment folders (`results/experiment_run/`): `description.json` (the config the run resolved,
its seed, Ludwig's version), `model/model_hyperparameters.json`, TensorBoard events per split under
`model/logs/{training,validation,test}/`, and, where the run got that far, `training_statistics.json`.

The config is the run's params (`defaults` and `preprocessing` left out: Ludwig fills them for every
feature type, used or not); each split's scalars are series under the split's name (`validation/...`),
read by the TensorBoard reader's own event reader; `training_statistics.json` adds each split's
per-epoch figures (`validation/FEATURE/accuracy` at step = epoch).
"""

from __future__ import annotations

from typing import Any

from ..records.base import MAX_DATA_BYTES, NONE, RUN, Folder, ReadError, Reading, flat, number
from .tensorboard import PATTERN, scalars

DESCRIPTION, HYPERPARAMETERS, STATISTICS = (
    "description.json",
    "model/model_hyperparameters.json",
    "training_statistics.json",
)
LOGS = "model/logs/"
BOILERPLATE = ("defaults", "preprocessing", "hyperopt")  # filled in by Ludwig for every feature type


class LudwigReader:
    name = "ludwig"

    def detect(self, folder: Folder) -> bool:
        return self.signature(folder) == RUN

    def signature(self, folder: Folder) -> int:
        if DESCRIPTION not in folder.files:
            return NONE
        try:
            description = folder.data(DESCRIPTION)
        except ReadError:
            return NONE
        return RUN if isinstance(description, dict) and "ludwig_version" in description else NONE

    def read(self, folder: Folder) -> Reading:
        reading = Reading()
        description = folder.data(DESCRIPTION)
        config = description.get("config") if isinstance(description.get("config"), dict) else {}
        if not config and HYPERPARAMETERS in folder.files:
            config = folder.data(HYPERPARAMETERS)
        reading.params = flat({k: v for k, v in config.items() if k not in BOILERPLATE})
        if description.get("random_seed") is not None:
            reading.params["random_seed"] = description["random_seed"]
            reading.identity.add("random_seed")
        reading.files.append(folder.files[DESCRIPTION])
        folder.claimed.update(r for r in (DESCRIPTION, HYPERPARAMETERS) if r in folder.files)
        self._events(folder, reading)
        if STATISTICS in folder.files:
            reading.series += _statistics(folder.data(STATISTICS))
            reading.files.append(folder.files[STATISTICS])
            folder.claimed.add(STATISTICS)
        return reading

    def _events(self, folder: Folder, reading: Reading) -> None:
        """Each split's events as series under the split's name; claimed, so TensorBoard does not read them twice."""
        times = []
        for rel in sorted(r for r in folder.glob(PATTERN) if r.startswith(LOGS)):
            if folder.size(rel) > MAX_DATA_BYTES:
                raise ReadError(f"{rel}: {folder.size(rel):,} bytes, more than the {MAX_DATA_BYTES:,} read")
            split = rel[len(LOGS) :].split("/", 1)[0]
            folder.claimed.add(rel)
            reading.files.append(folder.files[rel])
            for tag, value, step, ms in scalars(str(folder.files[rel]), rel):
                reading.series.append((tag if tag.startswith(f"{split}/") else f"{split}/{tag}", value, step, ms))
                times.append(ms)
        if times:
            reading.first_ms, reading.last_ms = min(times), max(times)
            reading.max_step = max(p[2] for p in reading.series)


def _statistics(stats: Any) -> list:
    """`{split: {feature: {metric: [per epoch]}}}` as (split/feature/metric, value, epoch, None) points."""
    points = []
    for split, features in (stats or {}).items() if isinstance(stats, dict) else ():
        for feature, metrics in (features or {}).items() if isinstance(features, dict) else ():
            for metric, values in (metrics or {}).items() if isinstance(metrics, dict) else ():
                for epoch, value in enumerate(values if isinstance(values, list) else [], start=1):
                    if (figure := number(value)) is not None:
                        points.append((f"{split}/{feature}/{metric}", figure, epoch, None))
    return points
