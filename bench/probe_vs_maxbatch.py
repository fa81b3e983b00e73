"""The probe against the finder users know: a Lightning/Accelerate-style max-batch finder (double the batch
until the step no longer fits the memory budget, then bisect) versus `tunelog probe`, under one budget, on
the demo model and on a larger tiny config. Both picks are then measured side by side, interleaved, in one
process (the machine's speed drifts over minutes; measured back to back, picks compare on the same footing).

Prints each pick, its samples/s, each search's wall time, the largest batch's throughput against the
probe's pick, and last `probe_vs_maxbatch RATIO target >= 1.0: ok|miss` (the probe's pick over the
max-batch pick, the worse of the two models). Everything runs in this process: on the CPU the budget is
this process's peak RSS, the same for both searches.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from statistics import median

import yaml

from _common import REPO, SMOKE, sized, temp_store, verdict

MODELS = {  # name -> tiny config overrides: the demo's, and one where a step is long enough to time well
    "demo": {},
    "larger": {"hidden_size": 256, "intermediate_size": 512, "num_layers": 4},
}
BATCHES = sized([2, 4, 8, 16, 32, 64, 128, 256], [2, 4, 8])


def spec_for(overrides: dict) -> Path:
    raw = yaml.safe_load((REPO / "examples/demo/demo.yaml").read_text())
    for key in ("train", "eval"):
        raw["data"][key] = str(REPO / "examples/demo" / raw["data"][key])
    raw["model"]["tokenizer"] = str(REPO / "examples/demo/tokenizer.json")
    raw["model"]["tiny"].update(overrides)
    for section in ("pipeline", "search", "configs"):
        raw.pop(section, None)
    raw["probe"] = {
        "params": {"train.batch_size": {"type": "categorical", "choices": BATCHES}},
        "max_steps": sized(8, 2),
        "min_seconds": sized(1.0, 0.0),
        "headroom": 0.0,
    }
    path = Path(tempfile.mkdtemp(prefix="tunelog-maxbatch-")) / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def max_batch_finder(probe, budget: float) -> int:
    """Double until the step's peak passes the budget, then bisect between the last fit and the first miss."""
    fits = lambda b: probe.measure({"train.batch_size": b}).outcome == "ok"  # noqa: E731
    low, high = 1, 2
    while high <= BATCHES[-1] and fits(high):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def compare(name: str, overrides: dict) -> float:
    from tunelog.probe import Probe
    from tunelog.spec import load_spec
    from tunelog.tracking import Tracker

    spec = load_spec(spec_for(overrides))
    probe = Probe(spec, Tracker(), echo=lambda s: None)  # one process, one loaded model for every measurement
    n_samples = probe.measurer.prepare()
    probe.measurer.prepare = lambda: n_samples  # run() below must not load a second copy of the model
    peaks = [probe.measure({"train.batch_size": b}).peak_gb for b in (BATCHES[0], BATCHES[-1])]
    budget = peaks[0] + 0.6 * (peaks[1] - peaks[0])  # the largest batch does not fit; most do
    probe.budget = probe.measurer.budget = probe.limit = budget
    start = time.perf_counter()
    biggest = max_batch_finder(probe, budget)
    finder_wall = time.perf_counter() - start
    start = time.perf_counter()
    picked = probe.run().best
    probe_wall = time.perf_counter() - start
    probe.measurer.budget = None  # both picks fit; now only their speed is compared
    ours, theirs = {"train.batch_size": picked.values["train.batch_size"]}, {"train.batch_size": biggest}
    scores: dict[str, list[float]] = {"probe": [], "max-batch": []}
    for _ in range(sized(3, 1)):
        for label, config in (("probe", ours), ("max-batch", theirs)):
            scores[label].append(probe.measure(config).samples_per_s)
    mine, other = median(scores["probe"]), median(scores["max-batch"])
    print(f"{name}: budget {budget:.3f} GB")
    print(f"  max-batch finder: batch {biggest}, {other:.1f} samples/s side by side; search {finder_wall:.1f} s")
    print(
        f"  tunelog probe:    batch {ours['train.batch_size']}, {mine:.1f} samples/s side by side; "
        f"search {probe_wall:.1f} s"
    )
    if biggest != ours["train.batch_size"]:
        print(f"  the largest batch that fits runs at {other / mine:.3f}x the probe's pick")
    return mine / other


def main() -> None:
    temp_store()
    models = {"demo": MODELS["demo"]} if SMOKE else MODELS
    ratios = [compare(name, overrides) for name, overrides in models.items()]
    print(verdict("probe_vs_maxbatch", min(ratios), ">=", 1.0))


if __name__ == "__main__":
    main()
