"""The probe against the finder users know: a Lightning/Accelerate-style max-batch finder (double the batch
until the step no longer fits the memory budget, then bisect) versus `tunelog probe`, under one budget, on
the demo model and on a larger tiny config. Both picks are then measured side by side, interleaved, in one
process (the machine's speed drifts over minutes; measured back to back, picks compare on the same footing),
seven rounds interleaved, each pick scored by its best round (other work on a shared machine only ever
slows a step: the same config measured four times ran 1036 to 1614 samples/s here).

Prints each pick, its samples/s, each search's wall time, the largest batch's throughput against the
probe's pick, then `probe_search_vs_finder RATIO target <= 1.5` (the probe's search time over the
finder's, the worse model) and last `probe_vs_maxbatch RATIO target >= 1.0: ok|miss` (the probe's pick over
the max-batch pick, the worse model). Where CUDA is present a third arm runs on the GPU: a ~30M-parameter
config in bf16, its budget in CUDA memory (`gpu-bf16`). Each search runs in a fresh process, as a user would run
it (on the CPU the budget is the process's peak RSS: one search must not inherit another's heap); the
picks are then measured in this process, without a budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import REPO, SMOKE, sized, temp_store, verdict

MODELS = {  # name -> tiny config overrides: the demo's, and one where a step is long enough to time well
    "demo": {},
    "larger": {"hidden_size": 256, "intermediate_size": 512, "num_layers": 4},
}
# the GPU arm, where CUDA is present: a ~30M-parameter config in bf16, the budget in CUDA memory
GPU_MODEL = {"hidden_size": 512, "intermediate_size": 1408, "num_layers": 8, "num_heads": 8}
GPU_ARM = "gpu-bf16"
BATCHES = sized([2, 4, 8, 16, 32, 64, 128, 256], [2, 4, 8])


def spec_for(model: str) -> Path:
    overrides = GPU_MODEL if model == GPU_ARM else MODELS[model]
    raw = yaml.safe_load((REPO / "examples/demo/demo.yaml").read_text())
    if model == GPU_ARM:
        raw["train"]["precision"] = "bf16"
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


def child(mode: str, model: str, budget: float) -> dict:
    """One search in a fresh process, as a user runs it: on the CPU the budget is the process's RSS, so a
    search must not inherit another's heap. Prints its result as the last line, JSON."""
    argv = [sys.executable, __file__, "--child", mode, model, str(budget)] + (["--smoke"] if SMOKE else [])
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall": time.perf_counter() - start}


def run_child(mode: str, model: str, budget: float) -> None:
    from tunelog.probe import Probe
    from tunelog.spec import load_spec
    from tunelog.tracking import Tracker

    spec = load_spec(spec_for(model))
    probe = Probe(spec, Tracker(), max_memory_gb=budget if budget > 0 else None, echo=lambda s: None)
    if mode == "probe":
        print(json.dumps({"batch": probe.run().best.values["train.batch_size"]}))
        return
    probe.measurer.prepare()
    if mode == "scout":
        print(
            json.dumps({"peaks": [probe.measure({"train.batch_size": b}).peak_gb for b in (BATCHES[0], BATCHES[-1])]})
        )
    else:
        print(json.dumps({"batch": max_batch_finder(probe, budget)}))


def compare(name: str) -> tuple[float, float]:
    """(the probe's pick's samples/s over the finder's pick's, the probe's search time over the finder's)."""
    from tunelog.probe import Probe
    from tunelog.spec import load_spec
    from tunelog.tracking import Tracker

    peaks = child("scout", name, 0.0)["peaks"]
    budget = peaks[0] + 0.6 * (peaks[1] - peaks[0])  # the largest batch does not fit; most do
    finder, found = child("finder", name, budget), child("probe", name, budget)
    probe = Probe(load_spec(spec_for(name)), Tracker(), echo=lambda s: None)  # no budget: speed only
    probe.measurer.prepare()
    ours, theirs = {"train.batch_size": found["batch"]}, {"train.batch_size": finder["batch"]}
    if ours == theirs:  # one config: the same speed, whatever two measurements of it would say
        mine = other = max(probe.measure(ours).samples_per_s for _ in range(sized(3, 1)))
    else:  # interleaved, each scored by its best round: other work on the machine only ever slows a step
        scores: dict[str, list[float]] = {"probe": [], "max-batch": []}
        for _ in range(sized(7, 1)):
            for label, config in (("probe", ours), ("max-batch", theirs)):
                scores[label].append(probe.measure(config).samples_per_s)
        mine, other = max(scores["probe"]), max(scores["max-batch"])
    print(f"{name}: budget {budget:.3f} GB (each search in a fresh process)")
    print(
        f"  max-batch finder: batch {finder['batch']}, {other:.1f} samples/s side by side; "
        f"search {finder['wall']:.1f} s"
    )
    print(
        f"  tunelog probe:    batch {found['batch']}, {mine:.1f} samples/s side by side; search {found['wall']:.1f} s"
    )
    if finder["batch"] != found["batch"]:
        print(f"  the largest batch that fits runs at {other / mine:.3f}x the probe's pick")
    return mine / other, found["wall"] / finder["wall"]


def command_arm() -> float:
    """The probe's measurer on a command trainer (a Trainer-style console: start-up chatter in one instant, log
    dicts without a step; tests/fixtures/trainer_console.py, a stand-in that sleeps per sample) against the
    script's own samples/s of the same run: the worst agreement over the batches, as min(a/b, b/a)."""
    from tunelog.probe.command import CommandMeasurer
    from tunelog.spec import load_spec

    folder = Path(tempfile.mkdtemp(prefix="tunelog-cmd-arm-"))
    (folder / "train.txt").write_text("".join(f"line {i}\n" for i in range(200)))
    own = folder / "own.txt"
    raw = {
        "model": {"name": "a-script-model"},
        "data": {"train": "train.txt"},
        "tracking": {"experiment": "command-arm", "metric": "eval/loss"},
        "train": {"batch_size": 8, "max_steps": 40},
        "trainer": {
            "type": "command",
            "argv": [
                "{python}",
                str(REPO / "tests/fixtures/trainer_console.py"),
                "--batch_size",
                "{train.batch_size}",
                "--max_steps",
                "{train.max_steps}",
                "--own_file",
                str(own),
            ],
        },
        "probe": {"warmup_steps": 2, "max_steps": sized(20, 4)},
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw))
    spec = load_spec(folder / "spec.yaml")
    measurer = CommandMeasurer(spec, spec.probe, None)
    measurer.prepare()
    worst = 1.0
    for batch in sized([4, 8, 16, 32], [8]):
        own.unlink(missing_ok=True)
        measured = measurer.measure({"train.batch_size": batch})
        figure = float(own.read_text().split()[1])
        agreement = min(measured.samples_per_s / figure, figure / measured.samples_per_s)
        worst = min(worst, agreement)
        print(f"command arm: batch {batch}: probe {measured.samples_per_s:.1f} samples/s, script's own {figure:.1f}")
    return worst


def main() -> None:
    if "--child" in sys.argv:
        at = sys.argv.index("--child")
        run_child(sys.argv[at + 1], sys.argv[at + 2], float(sys.argv[at + 3]))
        return
    temp_store()  # the children inherit it through MLFLOW_TRACKING_URI
    import torch

    names = ["demo"] if SMOKE else list(MODELS)
    if torch.cuda.is_available():
        names.append(GPU_ARM)
    else:
        print(f"{GPU_ARM}: no CUDA device here; the GPU arm runs where one is present")
    only = [a for a in os.environ.get("TUNELOG_BENCH_ARMS", "").split(",") if a]  # gpu_check.sh: the GPU arm alone
    names = [n for n in names if not only or n in only]
    agreement = command_arm() if not only or "command" in only else 1.0
    ratios = {name: compare(name) for name in names}
    print("pick / finder's pick: " + ", ".join(f"{name} {pick:.3f}x" for name, (pick, _) in ratios.items()))
    print("search / finder's search: " + ", ".join(f"{name} {took:.2f}x" for name, (_, took) in ratios.items()))
    print(verdict("command_probe_vs_own_samples_per_s", agreement, ">=", 0.9))
    print(verdict("probe_search_vs_finder", max(took for _, took in ratios.values()), "<=", 1.5))
    print(verdict("probe_vs_maxbatch", min(pick for pick, _ in ratios.values()), ">=", 1.0))


if __name__ == "__main__":
    main()
