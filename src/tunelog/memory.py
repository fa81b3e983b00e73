"""Peak memory of the training process: CUDA's own counters on a GPU, peak RSS on the CPU.

Both can be reset, so a probe can measure one candidate at a time: CUDA through
`reset_peak_memory_stats`, the CPU through Linux's `/proc/self/clear_refs` (writing
5 resets the high-water mark that `VmHWM` reports).
"""
from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

import torch

_GB = 1e9
_STATUS = Path("/proc/self/status")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: the peak then covers the whole process lifetime
        pass


def peak_gb(device: torch.device) -> float:
    """Peak memory in GB (1e9 bytes) since the last reset."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / _GB
    try:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", _STATUS.read_text())
        if match:
            return int(match.group(1)) * 1024 / _GB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / _GB
