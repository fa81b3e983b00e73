"""GPU-ready check: on a CUDA machine, probe a small model in bf16 with an 8-bit optimizer and 4-bit base
weights (QLoRA) under a memory budget, train the pick for 50 steps, and check that the trained run's peak
memory and samples/s are within 10% of what the probe measured. Without CUDA it says so in one line.

The model is a Llama-style config saved to a temp folder and loaded back through `from_pretrained` with
bitsandbytes' 4-bit quantization (no hub). Every sample is cut to the same length, so the probe's
worst-case batch is the batch training sees.

Run it on a GPU machine: `bash scripts/setup.sh && .venv/bin/python bench/gpu_probe.py`.
Last line: `gpu_probe_disagreement MAX_RELATIVE_GAP target <= 0.1: ok|miss`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from _common import REPO, sized, temp_store, verdict

STEPS = sized(50, 10)


def small_model(folder: Path) -> None:
    """A ~30M-parameter Llama saved as a local model folder (weights and tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(REPO / "examples/demo/tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def spec_file(folder: Path) -> Path:
    lines = (REPO / "examples/demo/data/general/train.txt").read_text().splitlines()
    long = [" ".join(lines[i : i + 12]) for i in range(0, len(lines) - 12, 12)]  # every sample past max_length
    (folder / "train.txt").write_text("\n".join(long) + "\n")
    raw = {
        "model": {"name": str(folder / "model"), "load_in_4bit": True},
        "data": {"train": "train.txt", "max_length": 128},
        "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
        "train": {
            "learning_rate": 1e-4,
            "optimizer": "adamw8bit",
            "precision": "bf16",
            "max_steps": STEPS,
            "schedule": "constant",
        },
        "tracking": {"experiment": "gpu-probe", "metric": "train/final_loss"},
        "probe": {
            "params": {"train.batch_size": {"type": "categorical", "choices": [4, 8, 16, 32, 64]}},
            "headroom": 0.0,
        },
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        print("gpu_probe: no CUDA device here; run it on a GPU machine (see the docstring)")
        return
    temp_store()
    from tunelog.probe import Probe
    from tunelog.spec import load_spec
    from tunelog.tracking import Tracker
    from tunelog.train import run_training

    folder = Path(tempfile.mkdtemp(prefix="tunelog-gpu-probe-"))
    small_model(folder / "model")
    spec = load_spec(spec_file(folder))
    budget = 2.0  # GB of CUDA memory: the larger batches do not fit
    best = Probe(spec, Tracker(), max_memory_gb=budget, echo=print).run().best
    assert best is not None, "nothing fit in the budget"
    picked = spec.with_overrides(best.values, "gpu_probe pick")
    _, result = run_training(picked, Tracker())
    trained_peak, trained_sps = result.metrics["perf/peak_mem_gb"], result.metrics["perf/mean_samples_per_s"]
    gaps = {
        "peak memory": abs(trained_peak - best.peak_gb) / best.peak_gb,
        "samples/s": abs(trained_sps - best.samples_per_s) / best.samples_per_s,
    }
    print(
        f"pick {best.values}: probe {best.peak_gb:.3f} GB, {best.samples_per_s:.1f} samples/s; "
        f"trained {STEPS} steps: {trained_peak:.3f} GB, {trained_sps:.1f} samples/s"
    )
    for name, gap in gaps.items():
        print(f"  {name}: {gap:.1%} apart")
    print(verdict("gpu_probe_disagreement", max(gaps.values()), "<=", 0.1))


if __name__ == "__main__":
    main()
