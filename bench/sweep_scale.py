"""Sweeps past one database's connections: workers on `postgresql://` directly vs through the study server.

A throwaway PostgreSQL on 127.0.0.1 (scripts/pg_local.sh) holds the studies; each worker is its own
`tunelog sweep` process in its own working folder, over the command trainer's cheap test script (no
training cost: what is measured is the study's bookkeeping), its runs in one SQLite MLflow store.

1. Overhead, at a worker count both can serve: seconds per trial through `tunelog study-server`
   (`grpc://`) over seconds per trial on `postgresql://` directly; target <= 1.2.
2. A database with a small `max_connections` and 3x that many workers: on `postgresql://` directly each
   worker's end is said (ok, failed with its last line, or hung past the timeout); through the study
   server every trial completes, and the study and the runs agree (trial count, one sweep run, nothing
   RUNNING).

Run: .venv/bin/python bench/sweep_scale.py [--smoke]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import _common
from _common import REPO, SMOKE, sized

CONNECTIONS = sized(12, 5)  # the database's max_connections in part 2 (superuser slots set to none)
WORKERS = sized(3, 2)  # part 1's worker count
TRIALS = sized(4, 2)  # trials per worker
TIMEOUT_S = 600


def spec(folder: Path, trials: int) -> Path:
    raw = yaml.safe_load((REPO / "examples/diffusion_lora/spec.yaml").read_text())
    raw["trainer"]["argv"][1] = str(REPO / "tests/fixtures/fake_diffusion_train.py")
    raw["trainer"]["argv"] += ["--sleep", "0"]
    raw["data"]["train"] = str(REPO / "examples/diffusion_lora/captions.txt")
    raw["tracking"]["experiment"] = "scale"
    raw.pop("configs", None)
    raw["search"] = {
        "n_trials": trials,
        "sampler": "random",
        "pruner": {"type": "none"},
        "params": {"train.learning_rate": {"type": "float", "min": 2e-5, "max": 4e-4, "log": True}},
    }
    path = folder / "scale.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def postgres(folder: Path, options: str = "") -> str:
    env = {**_env(), "PG_OPTIONS": options}
    started = subprocess.run(["bash", str(REPO / "scripts/pg_local.sh"), "start", str(folder)], env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    if started.returncode != 0:
        raise Unavailable(f"PostgreSQL did not start: {started.stderr.strip()[-300:]}")
    return started.stdout.strip() + "/optuna"


def stop(folder: Path) -> None:
    subprocess.run(["bash", str(REPO / "scripts/pg_local.sh"), "stop", str(folder)], capture_output=True, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}


def workers(path: Path, storage: str, study: str, n: int, trials: int, root: Path) -> tuple[float, list[str]]:
    """n `tunelog sweep` processes started together, each in its own folder; (wall seconds, each one's end)."""
    procs = []
    start = time.monotonic()
    for i in range(n):
        cwd = root / f"{study}-{i}"
        cwd.mkdir(parents=True)
        argv = [sys.executable, "-m", "tunelog.cli", "sweep", str(path), "--storage", storage, "--study", study]
        argv += ["--n-trials", str(trials * n)]
        procs.append(subprocess.Popen(argv, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True))  # fmt: skip
    ends = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(1.0, TIMEOUT_S - (time.monotonic() - start)))
            (root / f"{study}-{len(ends)}" / "stderr.txt").write_text(err)
            last = next((line for line in reversed(err.splitlines()) if line.strip()), "")
            ends.append("ok" if proc.returncode == 0 else f"exit {proc.returncode}: {last[:240]}")
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            ends.append(f"hung past {TIMEOUT_S} s")
    return time.monotonic() - start, ends


def study_server(storage: str, root: Path, connections: int = 4) -> tuple[subprocess.Popen, str]:
    from tunelog.errors import TunelogError
    from tunelog.sweep import open_storage

    port = _free_port()
    log = open(root / "study-server.log", "w")  # noqa: SIM115 (the process keeps it)
    argv = [sys.executable, "-m", "tunelog.cli", "study-server", "--storage", storage, "--port", str(port)]
    argv += ["--connections", str(connections)]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    url, deadline = f"grpc://127.0.0.1:{port}", time.monotonic() + 120
    while True:
        try:
            open_storage(url)
            return proc, url
        except TunelogError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"sweep_scale: the study server did not start: {(root / 'study-server.log').read_text()[-500:]}"
                ) from None
            time.sleep(0.2)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def agreement(storage: str, study: str, expected: int) -> str:
    """Whether the study and the runs agree: trials complete, one sweep run, nothing RUNNING."""
    import optuna
    from mlflow import MlflowClient

    from tunelog.sweep import open_storage

    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).trials
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("scale").experiment_id
    runs = client.search_runs([experiment], f"tags.`tunelog.study` = '{study}'")
    sweeps = [r for r in runs if r.data.tags.get("tunelog.kind") == "sweep"]
    running = [r for r in runs if r.info.status == "RUNNING"]
    return f"{complete}/{expected} trials complete, {len(sweeps)} sweep run, {len(running)} runs RUNNING"


class Unavailable(Exception):
    """What the bench needs is not on this machine: said in the verdict line, exit 0."""


def main() -> None:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        print("sweep_scale_proxy_over_direct nan target <= 1.2: miss (no PostgreSQL here: initdb, pg_ctl)")
        return
    try:
        measure()
    except Unavailable as exc:
        print(f"sweep_scale_proxy_over_direct nan target <= 1.2: miss ({exc})")


def measure() -> None:
    _common.temp_store()
    root = Path(tempfile.mkdtemp(prefix="tunelog-scale-"))
    path = spec(root, TRIALS)
    pg = Path(tempfile.mkdtemp(prefix="tunelog-pg-"))
    try:
        storage = postgres(pg)
        server, url = study_server(storage, root)
        try:
            direct_s, direct_ends = workers(path, storage, "direct", WORKERS, TRIALS, root)
            proxy_s, proxy_ends = workers(path, url, "proxy", WORKERS, TRIALS, root)
            agreed = agreement(url, "proxy", WORKERS * TRIALS)
        finally:
            server.kill()
        n = WORKERS * TRIALS
        print(f"{WORKERS} workers x {TRIALS} trials: direct {direct_s / n:.2f} s/trial ({direct_ends.count('ok')} ok), "
              f"proxy {proxy_s / n:.2f} s/trial ({proxy_ends.count('ok')} ok); {agreed}")  # fmt: skip
        ratio = proxy_s / direct_s
    finally:
        stop(pg)
    capped(root, path)
    verdict = "ok" if ratio <= 1.2 else "miss"
    note = " (smoke: sizes too small to mean anything)" if SMOKE else ""
    print(f"sweep_scale_proxy_over_direct {ratio:.3f} target <= 1.2: {verdict}{note}")


def capped(root: Path, path: Path) -> None:
    """Part 2: 3x max_connections workers, direct and through the study server, on a capped database."""
    pg = Path(tempfile.mkdtemp(prefix="tunelog-pg-"))
    many = 3 * CONNECTIONS
    try:
        storage = postgres(pg, f"-c max_connections={CONNECTIONS} -c superuser_reserved_connections=0")
        _, ends = workers(path, storage, "capped-direct", many, 1, root)
        print(f"max_connections={CONNECTIONS}, {many} workers on postgresql:// directly: "
              f"{ends.count('ok')} ok, {sum(e.startswith('exit') for e in ends)} failed, {sum(e.startswith('hung') for e in ends)} hung")  # fmt: skip
        for end in sorted(set(e for e in ends if e != "ok")):
            print(f"  {ends.count(end)} x {end}")
        server, url = study_server(storage, root, max(2, CONNECTIONS - 2))  # Optuna opens 2 at once
        try:
            seconds, ends = workers(path, url, "capped-proxy", many, 1, root)
            agreed = agreement(url, "capped-proxy", many)
        finally:
            server.kill()
        print(f"  through the study server: {ends.count('ok')} of {many} ok in {seconds:.0f} s; {agreed}")
        for end in sorted(set(e for e in ends if e != "ok")):
            print(f"  {ends.count(end)} x {end}")
    finally:
        stop(pg)


if __name__ == "__main__":
    main()
