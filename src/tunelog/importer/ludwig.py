"""Ludwig experiment folders (`results/experiment_run/`): `description.json` (the config the run resolved,
its seed, Ludwig's version), `model/model_hyperparameters.json`, TensorBoard events per split under
`model/logs/{training,validation,test}/`, and, where the run got that far, `training_statistics.json`.

The config is the run's params (`defaults` and `preprocessing` left out: Ludwig fills them for every
feature type, used or not); each split's scalars are series under the split's name (`validation/...`),
read as the TensorBoard reader reads events (`read_events`); `training_statistics.json` adds each split's
per-epoch figures (`validation/FEATURE/accuracy` at step = epoch).
"""

from __future__ import annotations

from typing import Any

from ..records.base import NONE, RUN, Folder, ReadError, Reading, flat, number
from .tensorboard import PATTERN, read_events

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
        read_events(folder, sorted(r for r in folder.glob(PATTERN) if r.startswith(LOGS)), reading, _split_tag)
        if STATISTICS in folder.files:
            reading.series += _statistics(folder.data(STATISTICS))
            reading.files.append(folder.files[STATISTICS])
            folder.claimed.add(STATISTICS)
        return reading


def _split_tag(rel: str, tag: str) -> str:
    """A split's scalar under the split's name: `model/logs/validation/...` -> `validation/TAG`."""
    split = rel[len(LOGS) :].split("/", 1)[0]
    return tag if tag.startswith(f"{split}/") else f"{split}/{tag}"


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
