"""TensorBoard event files anywhere in the run folder: every scalar series by step.

Read with tensorboard's own record reader (`LegacyEventFileLoader`: no TensorFlow needed, and none of
the read-time migration the UI's loader does); both scalar encodings count: `simple_value`
(torch's `SummaryWriter`, so kohya, Lightning and the HF Trainer) and a float scalar tensor
(TensorFlow 2's `tf.summary.scalar`). Wall times give the run's start and end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from ..records.base import MAX_DATA_BYTES, NONE, RUN, Folder, ReadError, Reading

PATTERN = "*tfevents*"


class TensorBoardReader:
    name = "tensorboard"

    def _files(self, folder: Folder) -> list[str]:
        return sorted(rel for rel in folder.glob(PATTERN) if rel not in folder.claimed)

    def detect(self, folder: Folder) -> bool:
        return bool(self._files(folder))

    def signature(self, folder: Folder) -> int:
        """An events file in the folder itself: the folder a writer logged a run to."""
        return RUN if any("/" not in rel for rel in self._files(folder)) else NONE

    def read(self, folder: Folder) -> Reading:
        reading = Reading()
        read_events(folder, self._files(folder), reading)
        return reading


def read_events(
    folder: Folder, rels: list[str], reading: Reading, name: Callable[[str, str], str] = lambda rel, tag: tag
) -> None:
    """These event files' scalars into `reading` (each tag as `name(rel, tag)`, a later write of a step winning),
    with the run's start, end and furthest step; claimed, so no other reader reads them again."""
    points: dict[tuple[str, int], tuple[float, int]] = {}  # (tag, step) -> (value, ms)
    for rel in rels:
        if folder.size(rel) > MAX_DATA_BYTES:
            raise ReadError(f"{rel}: {folder.size(rel):,} bytes, more than the {MAX_DATA_BYTES:,} read")
        folder.claimed.add(rel)
        reading.files.append(folder.files[rel])
        for tag, value, step, ms in scalars(str(folder.files[rel]), rel):
            points[(name(rel, tag), step)] = (value, ms)
    reading.series += [(tag, value, step, ms) for (tag, step), (value, ms) in sorted(points.items())]
    if points:
        times = [ms for _, ms in points.values()]
        reading.first_ms, reading.last_ms = min(times), max(times)
        reading.max_step = max(step for _, step in points)


def scalars(path: str, rel: str):
    """(tag, value, step, ms) of each scalar in one event file; a torn last record ends the file."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    try:
        for event in LegacyEventFileLoader(path).Load():
            if not event.HasField("summary"):
                continue
            ms = int(event.wall_time * 1000)
            for value in event.summary.value:
                number = _scalar(value)
                if number is not None:
                    yield value.tag, number, int(event.step), ms
    except Exception as exc:  # a damaged record: protobuf and the reader raise their own types
        raise ReadError(f"{rel}: not a readable TensorBoard event file ({type(exc).__name__})") from None


def _scalar(value) -> Optional[float]:
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor") and not value.tensor.tensor_shape.dim:
        tensor = value.tensor
        for field in ("float_val", "double_val"):
            values = getattr(tensor, field)
            if len(values) == 1:
                return float(values[0])
        if tensor.tensor_content and tensor.dtype in (1, 2):  # DT_FLOAT, DT_DOUBLE packed in bytes
            from tensorboard.util import tensor_util

            return float(tensor_util.make_ndarray(tensor))
    return None
