"""Probe efficiency on the demo: `tunelog probe` against an exhaustive grid (`tunelog probe
--exhaustive`) over the same space and memory budget, in one run of this script. Both are the
same command in a fresh process (on the CPU the budget is the process's peak RSS, so both must
have the same process shape), with the same measurement; only the search differs.

Prints: candidates run over the grid's (<= 1/3); wall time over the grid's (<= 1/3); the
spread between two measurements of one candidate (the probe's pick, measured by the grid and by
the probe) as the noise floor; and the probe's pick over the grid's best (>= 0.97). For that
last ratio the two configs are measured again side by side, alternating, three rounds each, in
one process: this machine's speed drifts 10-20% over the minutes a grid takes, so the grid's
own figures compare moments as much as configs (that ratio is printed too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, SMOKE, temp_store, verdict

SPEC = REPO / "examples/demo/demo.yaml"


def smoke_spec() -> Path:
    """The demo with a 2 x 2 probe grid and short steps: the bench's whole path in seconds."""
    import yaml

    raw = yaml.safe_load(SPEC.read_text())
    for key in ("train", "eval"):
        raw["data"][key] = str(REPO / "examples/demo" / raw["data"][key])
    raw["model"]["tokenizer"] = str(REPO / "examples/demo/tokenizer.json")
    raw.pop("pipeline", None)
    raw["probe"] = {
        "params": {
            "train.batch_size": {"type": "categorical", "choices": [2, 4]},
            "lora.r": {"type": "categorical", "choices": [4, 8]},
        },
        "max_steps": 2,
        "min_seconds": 0,
    }
    path = Path(tempfile.mkdtemp(prefix="tunelog-probe-smoke-")) / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


if SMOKE:
    SPEC = smoke_spec()


def probe_run(workdir: Path, *args: str) -> tuple[dict, float]:
    """Run `tunelog probe` in a fresh process; returns its summary JSON and its wall time."""
    from mlflow import MlflowClient

    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tunelog.cli", "probe", str(SPEC), "--force", "-o", str(workdir / "best.sh"), *args],
        capture_output=True,
        text=True,
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    run_id = next(line.split("probe run ")[1].strip() for line in proc.stdout.splitlines() if "probe run " in line)
    path = MlflowClient().download_artifacts(run_id, "probe_summary.json", tempfile.mkdtemp())
    return json.loads(Path(path).read_text()), wall


def side_by_side(configs: list[dict], rounds: int = 3) -> list[float]:
    """Each config's median samples/s over `rounds` measurements, alternating between them."""
    from statistics import median

    from tunelog.probe import Probe
    from tunelog.spec import load_spec
    from tunelog.tracking import Tracker

    probe = Probe(load_spec(SPEC), Tracker(), echo=lambda s: None)
    probe.measurer.prepare()
    scores: list[list[float]] = [[] for _ in configs]
    for _ in range(rounds):
        for i, config in enumerate(configs):
            scores[i].append(probe.measure(config).samples_per_s)
    return [median(s) for s in scores]


def main() -> None:
    temp_store()
    work = Path(tempfile.mkdtemp(prefix="tunelog-probe-bench-"))
    scout, _ = probe_run(work, "--exhaustive")  # every candidate, no budget: peaks for choosing one
    peaks = sorted(m["peak_mem_gb"] for m in scout["measured"])
    budget = peaks[len(peaks) // 2] / 0.9  # about half the grid fits under the budget less 10% headroom
    grid, grid_wall = probe_run(work, "--exhaustive", "--max-memory-gb", f"{budget:.4f}")
    found, probe_wall = probe_run(work, "--max-memory-gb", f"{budget:.4f}")

    limit = budget * 0.9  # the spec's default 10% headroom
    fits = [m for m in grid["measured"] if m["outcome"] == "ok" and m["peak_mem_gb"] <= limit]
    grid_best = max(fits, key=lambda m: m["samples_per_s"])
    pick = found["best"]["config"]
    # the probe bisects above the grid's largest fitting batch: its pick may be a batch the grid never ran
    pick_in_grid = next((m for m in grid["measured"] if m["config"] == pick), None)
    print(
        f"budget {budget:.3f} GB (limit {limit:.3f} with headroom); grid of {grid['grid']} candidates, "
        f"{len(grid['failed_oom'])} out of memory, {len(fits)} fit"
    )
    print(f"grid best:  {grid_best['config']} {grid_best['samples_per_s']:.1f} samples/s; wall {grid_wall:.1f} s")
    said = (
        f"grid measured it at {pick_in_grid['samples_per_s']:.1f}"
        if pick_in_grid
        else "between grid points: found by bisection, measured side by side below"
    )
    print(
        f"probe pick: {pick} {found['best']['samples_per_s']:.1f} samples/s ({said}); {found['tested']} run, "
        f"{len(found['skipped'])} skipped; wall {probe_wall:.1f} s"
    )
    if pick_in_grid:
        spread = abs(pick_in_grid["samples_per_s"] - found["best"]["samples_per_s"]) / grid_best["samples_per_s"]
        print(f"spread between two measurements of the probe's pick: {spread:.1%}")
        print(
            f"pick / grid best by the grid's own figures: {pick_in_grid['samples_per_s'] / grid_best['samples_per_s']:.3f}"
        )
    if pick == grid_best["config"]:
        ratio = 1.0
    else:
        ours, theirs = side_by_side([pick, grid_best["config"]])
        ratio = ours / theirs
        print(f"side by side: pick {ours:.1f} samples/s, grid best {theirs:.1f} samples/s")
    print(verdict("probe_candidates_ratio", found["tested"] / grid["tested"], "<=", 0.333))
    print(verdict("probe_wall_ratio", probe_wall / grid_wall, "<=", 0.333))
    print(verdict("probe_best_ratio", ratio, ">=", 0.97))


if __name__ == "__main__":
    main()
