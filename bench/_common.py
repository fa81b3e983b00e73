"""Shared by the benchmarks: the demo spec, a temp MLflow store, and the closing line format."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# `--smoke`: every bench end to end at a size that takes seconds, so a clean checkout (and CI)
# proves each one still runs; its figures then mean nothing and its verdict line says so.
SMOKE = "--smoke" in sys.argv


def sized(full, smoke):
    """The full size, or the smoke test's."""
    return smoke if SMOKE else full


def temp_store() -> str:
    """Point MLflow at a fresh SQLite store, as a user's default store would be."""
    folder = Path(tempfile.mkdtemp(prefix="tunelog-bench-"))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.pop("MLFLOW_RUN_ID", None)
    return uri


def demo_spec(**train):
    from tunelog.spec import load_spec

    overrides = {f"train.{k}": v for k, v in train.items()}
    return load_spec(REPO / "examples/demo/demo.yaml", overrides=overrides)


def verdict(name: str, value: float, op: str, target: float) -> str:
    ok = value <= target if op == "<=" else value >= target
    smoke = " (smoke run: sizes too small to mean anything)" if SMOKE else ""
    return (
        f"{smoke.strip() + chr(10) if smoke else ''}{name} {value:.3f} target {op} {target}: {'ok' if ok else 'miss'}"
    )
