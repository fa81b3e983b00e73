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
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a CUDA device is used: a command trainer's process never needs it
    import torch

_GB = 1e9
_STATUS = Path("/proc/self/status")


def release(device: torch.device) -> None:
    """Give freed memory back before the next measurement.

    On the CPU, glibc keeps freed heap pages resident, so the next candidate's RSS would start
    at the last one's high-water mark (a small config after a big one read as out of memory);
    `malloc_trim(0)` returns them to the system. On a GPU, the caching allocator's blocks go back.
    """
    import gc

    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS may then carry some of the last candidate
        pass


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: the peak then covers the whole process lifetime
        pass


def peak_gb(device: torch.device) -> float:
    """Peak memory in GB (1e9 bytes) since the last reset."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / _GB
    try:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", _STATUS.read_text())
        if match:
            return int(match.group(1)) * 1024 / _GB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / _GB


class ProcessTreeMemory:
    """Peak memory of a child process and everything it started, sampled while it runs.

    For a command trainer, whose memory tunelog cannot read from inside: the RSS summed over the
    process tree (psutil), and, where `nvidia-smi` is on the PATH, the GPU memory its PIDs hold.
    A sample every `interval` seconds can miss a spike shorter than that; the CUDA caching
    allocator keeps what it reserved, so on a GPU the reading is close to the real peak.
    With `budget_gb`, `on_over` is called once when the reading passes it (the probe's CPU budget).
    """

    def __init__(self, pid: int, budget_gb: float | None = None, on_over=None, interval: float = 0.05):
        import shutil
        import threading

        self.pid, self.budget_gb, self.on_over, self.interval = pid, budget_gb, on_over, interval
        self.peak_rss_gb = 0.0
        self.peak_gpu_gb = 0.0
        self.over: str | None = None
        self._smi = shutil.which("nvidia-smi")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="tunelog-tree-memory")
        self._thread.start()

    @property
    def peak_gb(self) -> float:
        """GPU memory when the tree used the GPU, else RSS: the memory a budget is about."""
        return self.peak_gpu_gb or self.peak_rss_gb

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        ticks = 0
        while not self._done.is_set():
            procs = self._tree()
            if procs:
                self.peak_rss_gb = max(self.peak_rss_gb, _rss_gb(procs))
                if self._smi and ticks % 10 == 0:  # nvidia-smi takes tens of ms: every tenth sample
                    pids = [p.pid for p in procs]
                    self.peak_gpu_gb = max(self.peak_gpu_gb, gpu_gb_of(_nvidia_smi(self._smi), pids))
            if self.budget_gb is not None and self.over is None and self.peak_gb > self.budget_gb:
                self.over = f"peak {self.peak_gb:.3f} GB above the {self.budget_gb:g} GB budget"
                if self.on_over:
                    self.on_over()
            ticks += 1
            self._done.wait(self.interval)

    def _tree(self) -> list:
        """The child and its descendants, as psutil processes (empty once it has ended)."""
        import psutil

        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []


def _rss_gb(procs: list) -> float:
    import psutil

    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # it ended between the listing and the reading
            pass
    return total / _GB


def _nvidia_smi(path: str) -> str:
    import subprocess

    try:
        return subprocess.run(
            [path, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def gpu_gb_of(smi_csv: str, pids: list[int]) -> float:
    """GPU memory (GB) held by these PIDs, from `nvidia-smi --query-compute-apps=pid,used_memory` CSV (MiB)."""
    wanted, total = set(pids), 0.0
    for line in smi_csv.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) in wanted:
            try:
                total += float(parts[1]) * 2**20
            except ValueError:  # "[N/A]" where the driver does not say
                pass
    return total / _GB
