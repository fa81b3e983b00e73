"""Which GPUs a process may use, without importing torch.

Why not torch: importing it costs a second per process, and neither a sweep's planning of its workers nor
a command trainer's script launch (whose GPUs are recorded for the run's device-hours) needs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the driver sees (Linux)


def visible_gpus(env: dict[str, str]) -> list[str]:
    """The GPU ids a process with environment `env` may use: `CUDA_VISIBLE_DEVICES` when set, else every
    GPU the NVIDIA driver lists, else every device torch sees (when torch is already imported)."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d.strip() != "-1"]
    if NVIDIA_GPUS.is_dir():
        return [str(i) for i in range(len(list(NVIDIA_GPUS.iterdir())))]
    if "torch" in sys.modules:  # already paid for
        torch = sys.modules["torch"]
        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return []
