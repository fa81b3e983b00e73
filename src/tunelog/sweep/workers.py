"""`--workers N`: local worker processes on one study, each with its share of the machine.

Why shares: N processes that each use every core run slower together than one (0.09-0.60x trials a
minute seen on 2 cores), and N processes on one GPU fight for its memory. So each worker gets
`cores // N` threads (torch, OpenMP, MKL; inherited by a command trainer's script), and on a GPU node
its own `--gpus-per-trial` devices through `CUDA_VISIBLE_DEVICES`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Optional, Protocol

from ..errors import TunelogError
from ..training.devices import visible_gpus


class Sweep(Protocol):
    """What the workers need of `loop.Sweep` (a Protocol: workers sit below the loop that starts them)."""

    opts: Any
    spec: Any
    tracker: Any
    storage_url: str
    study_name: str
    n_trials: Optional[int]


def default_workers(env: dict[str, str], gpus_per_trial: int) -> int:
    """One worker per `gpus_per_trial` visible GPUs on a GPU node; one on the CPU."""
    return max(1, len(visible_gpus(env)) // gpus_per_trial)


def gpu_groups(gpus: list[str], workers: int, per_trial: int) -> list[Optional[str]]:
    """Each worker's `CUDA_VISIBLE_DEVICES`, or None for all on the CPU; refuses more than there are."""
    if not gpus:
        return [None] * workers
    if workers * per_trial > len(gpus):
        raise TunelogError(
            f"--workers {workers} x --gpus-per-trial {per_trial} needs {workers * per_trial} GPUs; "
            f"{len(gpus)} visible ({','.join(gpus)}); accepted: --workers {max(1, len(gpus) // per_trial)} or fewer"
        )
    return [",".join(gpus[i * per_trial : (i + 1) * per_trial]) for i in range(workers)]


def worker_threads(workers: int, env: dict[str, str]) -> dict[str, str]:
    """Each of N local workers gets its share of the cores (torch, OpenMP and MKL threads), unless the user
    set it."""
    share = str(max(1, (os.cpu_count() or 1) // workers))
    return {k: share for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k not in env}


def worker_envs(base: dict[str, str], workers: int, gpus_per_trial: int) -> list[dict[str, str]]:
    """One environment per worker: its thread share and, on a GPU node, its own devices."""
    groups = gpu_groups(visible_gpus(base), workers, gpus_per_trial)
    envs = []
    for group in groups:
        env = {**base, **worker_threads(workers, base)}
        if group is not None:
            env["CUDA_VISIBLE_DEVICES"] = group
        envs.append(env)
    return envs


def worker_options(sweep: "Sweep") -> list[str]:
    """Everything the parent was told that shapes a trial, so a worker's trials are the parent's."""
    opts = sweep.opts
    argv = [item for kv in opts.overrides for item in ("--set", kv)]
    if opts.timeout:
        argv += ["--timeout", str(opts.timeout)]
    if opts.quick:
        argv.append("--quick")
    if sweep.spec.config_name:
        argv += ["--config", sweep.spec.config_name]
    if opts.refine_from:
        argv += ["--refine-from", opts.refine_from, "--top-k", str(opts.top_k)]
    return argv


def spawn_workers(sweep: "Sweep", sweep_run_id: str) -> None:
    """N local worker processes on the same storage; the parent waits, then analyses."""
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    base.update(TUNELOG_SWEEP_RUN_ID=sweep_run_id, MLFLOW_TRACKING_URI=sweep.tracker.uri)
    argv = [sys.executable, "-m", "tunelog.cli", "sweep", sweep.spec.source, "--worker"]
    argv += ["--storage", sweep.storage_url, "--study", sweep.study_name, "--n-trials", str(sweep.n_trials)]
    argv += worker_options(sweep)
    procs = [
        subprocess.Popen(argv, env=env) for env in worker_envs(base, sweep.opts.workers, sweep.opts.gpus_per_trial)
    ]
    try:
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
    if any(codes):
        raise TunelogError(f"{sum(1 for c in codes if c)} of {len(codes)} workers failed (exit codes {codes})")
