"""Sweep workers: trials a minute of the demo sweep with `--workers 2` over one worker, side by side on
this machine (the CLI as users run it, a fresh study each time, the same trials: random sampler, the
same seed, no named configs). On 2 cores, two workers that each used every core ran at 0.09-0.60x of
one; each worker now gets its share of the cores. Target: ratio >= 0.95 (two workers must not lose).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import REPO, sized, temp_store, verdict

TRIALS, STEPS, ROUNDS = sized(8, 2), sized(30, 3), sized(2, 1)


def spec_file(folder: Path, study: str) -> Path:
    raw = yaml.safe_load((REPO / "examples/demo/demo.yaml").read_text())
    base = REPO / "examples/demo"
    raw["model"]["tokenizer"] = str(base / raw["model"]["tokenizer"])
    raw["data"]["train"] = str(base / raw["data"]["train"])
    raw["data"]["eval"] = str(base / raw["data"]["eval"])
    raw.pop("pipeline", None)
    raw["train"].update({"max_steps": STEPS, "eval_every": None})
    raw["configs"] = {}
    raw["search"] = {
        "study": study,
        "n_trials": TRIALS,
        "sampler": "random",
        "seed": 0,
        "params": {
            "train.learning_rate": {"type": "float", "min": 1e-4, "max": 5e-3, "log": True},
            "lora.r": {"type": "categorical", "choices": [4, 8]},
        },
    }
    path = folder / f"{study}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def trials_per_minute(folder: Path, workers: int, n: int) -> float:
    spec = spec_file(folder, f"w{workers}-{n}")
    argv = [sys.executable, "-m", "tunelog.cli", "sweep", str(spec), "--workers", str(workers), "--force"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, cwd=folder)
    return TRIALS / ((time.perf_counter() - start) / 60)


def main() -> None:
    temp_store()
    folder = Path(tempfile.mkdtemp(prefix="tunelog-workers-"))
    one, two = [], []
    for n in range(ROUNDS):  # alternated, so a change in the machine's speed hits both
        one.append(trials_per_minute(folder, 1, n))
        two.append(trials_per_minute(folder, 2, n))
    a, b = sum(one) / len(one), sum(two) / len(two)
    print(f"{os.cpu_count()} cores; {TRIALS} trials of {STEPS} steps, {ROUNDS} rounds")
    print(f"1 worker: {a:.2f} trials/min; 2 workers: {b:.2f} trials/min")
    print(verdict("sweep_workers", b / a, ">=", 0.95))


if __name__ == "__main__":
    main()
