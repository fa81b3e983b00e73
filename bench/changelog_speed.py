"""Changelog speed: build stores of 1,000 and 10,000 runs (20 params, 5 metrics each, logged in
batches) and time `changelog` (collect from the store, diff, judge, render) over each.

Targets: 10,000 runs in under 10 s, on the store directly and through `mlflow server` (REST, the
way a team reads a shared store): plain, then with `--app-name tunelog` (the same server, its garbage
collector set for bulk reads; the last line); the 10,000/1,000 time ratio is printed (near 10 means linear).
`promote` (read, pick, register with its description) is timed through the server too.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from _common import sized, temp_store, verdict


def fill(tracker, experiment: str, n: int, seed: int = 0) -> None:
    """n runs that evolve like a real history: each changes one or two settings of a recent run."""
    from mlflow.entities import Metric, Param, RunTag

    rng = random.Random(seed)
    client, exp_id = tracker.client, tracker.experiment_id(experiment)
    configs = [{f"p{i:02d}": str(rng.choice([1, 2, 3, 4])) for i in range(20)}]
    t0 = 1_700_000_000_000
    for k in range(n):
        config = dict(rng.choice(configs[-50:]))
        for key in rng.sample(sorted(config), rng.choice([1, 2])):
            config[key] = str(rng.choice([1, 2, 3, 4, 5]))
        configs.append(config)
        run = client.create_run(exp_id, start_time=t0 + k * 60_000, run_name=f"run-{k:05d}")
        loss = 3.0 - sum(int(v) for v in config.values()) / 40 + rng.random() * 0.1
        metrics = [
            Metric(m, loss * (1 + i / 10), t0 + k * 60_000, 1)
            for i, m in enumerate(["eval/loss", "train/loss", "perf/samples_per_s", "perf/peak_mem_gb", "train/lr"])
        ]
        client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(a, b) for a, b in config.items()],
            tags=[
                RunTag("tunelog.kind", "train"),
                RunTag("tunelog.outcome", "ok"),
                RunTag("tunelog.metric", "eval/loss"),
            ],
            synchronous=True,
        )
        client.set_terminated(run.info.run_id, end_time=t0 + k * 60_000 + 30_000)


def time_changelog(tracker, experiment: str) -> tuple[float, int]:
    from tunelog import changelog as cl

    start = time.perf_counter()
    text = cl.to_markdown(cl.collect_and_build(tracker, experiment))
    return time.perf_counter() - start, len(text)


@contextmanager
def server(store_uri: str, app: str | None = None):
    """`mlflow server [--app-name APP]` over the bench's store on a free port of 127.0.0.1, stopped at the end."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri, "--host", "127.0.0.1"]
    cmd += ["--app-name", app] if app else []
    proc = subprocess.Popen(cmd + ["--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def warm_up(tracker, experiment: str) -> None:
    """A long-running server's state: each worker has opened its store (first requests pay for that)."""
    from concurrent.futures import ThreadPoolExecutor

    exp = tracker.client.get_experiment_by_name(experiment).experiment_id
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: tracker.client.search_runs([exp], max_results=10), range(16)))


def over_rest(
    store_uri: str, experiment: str, repeats: int = 3, app: str | None = None
) -> tuple[list[float], list[float]]:
    """(changelog seconds, promote seconds) through the server, `repeats` times each: the first call after a
    server starts also pays its workers' first big query; the median is the steady state. promote is the
    whole `tunelog promote --experiment`: read the runs, pick the best, register it (a new model each time,
    so each call writes a version and its changelog-entry description)."""
    from tunelog.promote import best_run
    from tunelog.promote import promote as register
    from tunelog.tracking import Tracker

    local = Tracker(store_uri)
    with tempfile.TemporaryDirectory() as tmp:  # the best run's adapter, as a trained run has (promote needs one)
        (Path(tmp) / "adapter_config.json").write_text("{}")
        local.client.log_artifacts(best_run(local, experiment).run_id, tmp, "adapter")
    with server(store_uri, app) as url:
        os.environ["MLFLOW_TRACKING_URI"] = url
        try:
            tracker = Tracker()
            warm_up(tracker, experiment)
            changelog, promote = [], []
            for i in range(repeats):
                changelog.append(time_changelog(tracker, experiment)[0])
                start = time.perf_counter()
                runs = tracker.all_runs(experiment)
                register(tracker, best_run(tracker, experiment, runs=runs), f"bench-model-{i}-{app}", runs=runs)
                promote.append(time.perf_counter() - start)
            return changelog, promote
        finally:
            os.environ["MLFLOW_TRACKING_URI"] = store_uri


def main() -> None:
    temp_store()
    from tunelog.tracking import Tracker

    tracker = Tracker()
    results = {}
    small, large = sized((1_000, 10_000), (50, 200))
    for n in (small, large):
        start = time.perf_counter()
        fill(tracker, f"bench-{n}", n)
        built = time.perf_counter() - start
        seconds, size = time_changelog(tracker, f"bench-{n}")
        results[n] = seconds
        print(f"{n:>6} runs: store built in {built:.0f} s; changelog {seconds:.2f} s ({size / 1e6:.1f} MB of Markdown)")
    print(f"ratio {large:,} / {small:,} runs: {results[large] / results[small]:.1f} ({large // small} is linear)")
    print(verdict("changelog_10k_seconds", results[large], "<=", 10))
    for app, name in ((None, "mlflow server"), ("tunelog", "mlflow server --app-name tunelog")):
        rest, best = over_rest(tracker.uri, f"bench-{large}", sized(3, 1), app)
        print(
            f"through {name} (REST), {large:,} runs: changelog {', '.join(f'{x:.2f}' for x in rest)} s; "
            f"promote {', '.join(f'{x:.2f}' for x in best)} s (median is the steady state)"
        )
        suffix = f"_{app}" if app else ""
        print(verdict(f"promote_10k_rest{suffix}_seconds", statistics.median(best), "<=", 10))
        print(verdict(f"changelog_10k_rest{suffix}_seconds", statistics.median(rest), "<=", 10))


if __name__ == "__main__":
    main()
