"""Changelog speed on an experiment tunelog did not write: 10,000 runs as transformers' MLflowCallback logs them
(about 150 params each: every TrainingArguments field and the model config, `output_dir` and `run_name` per run;
`eval_loss`, `loss`, `epoch`; no tunelog tag), read as tunelog reads its own (`tracking.dialects`), then the
changelog built and rendered. Written in bulk through MLflow's own table models (`tracking.finished`).

Last line: `changelog_native_10k_s SECONDS target <= 5` (the changelog on the store directly); the 1,000-run
time is printed beside it (near a tenth means linear).
"""

from __future__ import annotations

import random
import time
import uuid

from _common import sized, temp_store, verdict


def fill(tracker, experiment: str, n: int, seed: int = 0) -> None:
    """n Trainer-style runs: a shared block of settings, one or two of them changed from a recent run."""
    from tunelog.tracking import FinishedRun

    rng = random.Random(seed)
    fixed = {f"arg_{i:03d}": str(rng.choice([0, 1, 2, "none", "adamw_torch"])) for i in range(140)}
    knobs = [{"learning_rate": "0.0001", "lora_dropout": "0.05", "warmup_ratio": "0.1", "weight_decay": "0.0"}]
    t0 = 1_700_000_000_000
    runs = []
    for k in range(n):
        knob = dict(rng.choice(knobs[-50:]))
        key = rng.choice(sorted(knob))
        knob[key] = str(rng.choice(["0.0001", "0.0003", "0.001", "0.05", "0.1", "0.0"]))
        knobs.append(knob)
        name = f"run-{k:05d}"
        params = {**fixed, **knob, "output_dir": f"out/{name}", "run_name": name, "logging_dir": f"out/{name}/runs"}
        loss = 3.0 - float(knob["learning_rate"]) * 100 + rng.random() * 0.1
        start = t0 + k * 60_000
        metrics = [("eval_loss", loss, start, 100), ("loss", loss + 0.1, start, 100), ("epoch", 1.0, start, 100)]
        runs.append(FinishedRun(uuid.uuid4().hex, name, start, start + 30_000, "FINISHED", params, {}, metrics))
    tracker.create_finished_runs(experiment, runs)


def main() -> None:
    temp_store()
    from tunelog import changelog as cl
    from tunelog.tracking import Tracker

    tracker = Tracker()
    times = {}
    for n in sized([1_000, 10_000], [100, 300]):
        experiment = f"native-{n}"
        fill(tracker, experiment, n)
        start = time.perf_counter()
        log = cl.collect_and_build(tracker, experiment)
        cl.to_markdown(log)
        times[n] = time.perf_counter() - start
        print(f"{n} runs: changelog {times[n]:.2f} s (headline {log.metric}, best {log.entry(log.best_id).name})")
    small, large = sorted(times)
    print(f"{large}/{small} time ratio: {times[large] / times[small]:.2f}")
    print(verdict("changelog_native_10k_s", times[large], "<=", 5.0))


if __name__ == "__main__":
    main()
