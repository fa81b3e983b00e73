"""Every CUDA path tunelog has, checked in one call on a lent GPU (run through bench/gpu_check.sh, which sets up
first): one table, a line per step with its figure and ok/miss, each step's log under OUT.

Steps: SmolLM2-135M QLoRA 4-bit training (loss falls, the adapter saved, promoted and loaded back, peak CUDA
memory), bf16 training of the demo model, the probe under a CUDA memory budget small enough that at least one
candidate runs out of memory for real (survived, reported, the next candidate measured), `probe_vs_maxbatch`'s
GPU arm and `train_throughput` on CUDA. Without CUDA each step says so in one line and the script exits 0, so
the one GPU call is never spent on a typo (CI runs it with --smoke on the CPU).
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

from _common import REPO, SMOKE, verdict

STEP_TIMEOUT_S = 150  # each step; the whole call must stay under 8 minutes on one H100


def sh(argv: list[str], log: Path, env: dict, timeout: float = STEP_TIMEOUT_S) -> tuple[int, str]:
    """Runs a step's command, its output into `log`; (exit code, its last line)."""
    with log.open("w") as out:
        try:
            code = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=REPO
            ).returncode
        except subprocess.TimeoutExpired:
            code = 124
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return code, lines[-1] if lines else ""


def store_env(folder: Path) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "HF_HUB_OFFLINE": "1"}


def last_run(env: dict, experiment: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1)
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)]
    return {"run_id": run.info.run_id, "metrics": run.data.metrics, "tags": run.data.tags, "losses": losses}


def spec_file(folder: Path, source: Path, overrides: dict) -> Path:
    raw = yaml.safe_load(source.read_text())
    for key in ("train", "eval", "tokenizer"):
        for section in ("data", "model"):
            value = raw.get(section, {}).get(key)
            if isinstance(value, str) and not value.startswith("package:"):
                raw[section][key] = str(source.parent / value)
    for dotted, value in overrides.items():
        node = raw
        *path, leaf = dotted.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    for section in ("search", "pipeline"):
        raw.pop(section, None)
    path = folder / f"{source.stem}-{len(list(folder.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def qlora(out: Path) -> tuple[bool, str]:
    folder = Path(tempfile.mkdtemp(prefix="gpu-qlora-"))
    env = store_env(folder)
    spec = spec_file(folder, REPO / "examples/smollm2/spec.yaml", {
        "model.load_in_4bit": True, "train.precision": "bf16", "train.max_steps": 30, "tracking.experiment": "qlora",
    })  # fmt: skip
    code, last = sh([sys.executable, "-m", "tunelog.cli", "train", str(spec)], out / "qlora.log", env)
    if code != 0:
        return False, f"train exit {code}: {last[:120]}"
    run = last_run(env, "qlora")
    code, last = sh(
        [sys.executable, "-m", "tunelog.cli", "promote", "--experiment", "qlora"], out / "qlora-promote.log", env
    )
    load = (
        "import tunelog; m = tunelog.load_model('models:/qlora-lora@champion'); print(type(m.model).__name__, m.device)"
    )
    loaded, said = sh([sys.executable, "-c", load], out / "qlora-load.log", env)
    falls = len(run["losses"]) > 2 and run["losses"][-1] < run["losses"][0]
    peak = run["metrics"].get("perf/peak_mem_gb", float("nan"))
    ok = falls and code == 0 and loaded == 0 and "cuda" in said
    return ok, f"loss {run['losses'][0]:.3f} -> {run['losses'][-1]:.3f}, peak {peak:.2f} GB CUDA, reloaded: {said[:60]}"


def bf16(out: Path) -> tuple[bool, str]:
    folder = Path(tempfile.mkdtemp(prefix="gpu-bf16-"))
    env = store_env(folder)
    spec = spec_file(folder, REPO / "examples/demo/demo.yaml", {
        "train.precision": "bf16", "train.max_steps": 60, "tracking.experiment": "bf16",
    })  # fmt: skip
    code, last = sh([sys.executable, "-m", "tunelog.cli", "train", str(spec)], out / "bf16.log", env)
    if code != 0:
        return False, f"train exit {code}: {last[:120]}"
    run = last_run(env, "bf16")
    falls = run["losses"][-1] < run["losses"][0]
    return (
        falls,
        f"loss {run['losses'][0]:.3f} -> {run['losses'][-1]:.3f}, peak {run['metrics'].get('perf/peak_mem_gb', 0):.3f} GB",
    )


def probe_oom(out: Path) -> tuple[bool, str]:
    """A budget between the smallest and the largest candidate's CUDA peak: the large ones run out for real."""
    folder = Path(tempfile.mkdtemp(prefix="gpu-probe-"))
    env = store_env(folder)
    spec = spec_file(folder, REPO / "examples/demo/demo.yaml", {
        "model.tiny.hidden_size": 512, "model.tiny.intermediate_size": 1408, "model.tiny.num_layers": 8,
        "model.tiny.num_heads": 8, "train.precision": "bf16", "tracking.experiment": "probe",
        "probe": {"params": {"train.batch_size": {"type": "categorical", "choices": [8, 64, 512, 4096]}},
                  "max_steps": 4, "headroom": 0.0},
    })  # fmt: skip
    code, last = sh(
        [sys.executable, "-m", "tunelog.cli", "probe", str(spec), "--max-memory-gb", "2", "-o", str(folder / "best.sh")],
        out / "probe.log", env,
    )  # fmt: skip
    text = (out / "probe.log").read_text(errors="replace")
    oom = text.count("oom") + text.count("out of memory")
    return code == 0 and oom > 0 and "best:" in text, f"exit {code}, {oom} OOM mentions, {last[:100]}"


def bench_arm(out: Path, name: str, argv: list[str], env_extra: dict) -> tuple[bool, str]:
    code, last = sh([sys.executable, *argv], out / f"{name}.log", {**os.environ, **env_extra}, timeout=240)
    return code == 0 and last.endswith(": ok"), last[:140]


def main() -> None:
    import torch

    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    steps = {
        "qlora-4bit": qlora,
        "bf16-train": bf16,
        "probe-cuda-oom": probe_oom,
        "probe_vs_maxbatch-gpu": lambda o: bench_arm(o, "probe_vs_maxbatch", ["bench/probe_vs_maxbatch.py"], {"TUNELOG_BENCH_ARMS": "gpu-bf16"}),
        "train_throughput-cuda": lambda o: bench_arm(o, "train_throughput", ["bench/train_throughput.py"], {}),
    }  # fmt: skip
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "no CUDA device"
    print(f"gpu_check on {device}; logs in {out}")
    passed = 0
    for name, step in steps.items():
        if not cuda:
            print(f"{name:<24} skip  no CUDA here: runs where a GPU is lent")
            continue
        start = time.monotonic()
        try:
            ok, said = step(out)
        except Exception as exc:  # noqa: BLE001 (one step's failure must not hide the others')
            ok, said = False, f"{type(exc).__name__}: {str(exc)[:120]}"
        passed += ok
        print(f"{name:<24} {'ok  ' if ok else 'miss'}  {said} ({time.monotonic() - start:.0f} s)", flush=True)
    (out / "gpu_check.json").write_text(json.dumps({"device": device, "passed": passed, "steps": len(steps)}))
    if SMOKE and not cuda:
        print("(smoke run on the CPU: every GPU step skipped)")
    print(verdict("gpu_check_steps_ok", passed, ">=", len(steps)))


if __name__ == "__main__":
    main()
