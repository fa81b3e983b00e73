"""What a spec's rules and plan need from the disk: the training file's sample count and the model's
hidden size. Kept out of `spec/` (which stays pure: no file a spec names is opened there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..spec import Spec
from ..spec.plan import TrainingPlan, make_plan
from ..spec.rules import Facts
from .data import count_samples
from .model_source import known_model_folder


def plan_for(spec: Spec, held_out: float = 0.0) -> TrainingPlan:
    """The plan of a spec as written: its training file's sample count read from disk, less what the script
    holds out for evaluation (`held_out`: a share below 1, else a count; LLaMA-Factory's `val_size`)."""
    n = count_samples(spec, spec.data.train, "data.train")
    kept = n - (round(n * held_out) if 0 < held_out < 1 else int(held_out))
    return make_plan(spec, max(1, kept))


def model_hidden_size(spec: Spec) -> Optional[int]:
    """The hidden size, from the tiny config or a local model's config.json (a GGUF's once converted);
    None when unknown (no hub, nothing converted yet: linting never starts a conversion)."""
    if spec.model.tiny is not None:
        return spec.model.tiny.hidden_size
    config = Path(known_model_folder(spec) or "") / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        return data.get("hidden_size") or data.get("d_model") or data.get("n_embd")
    return None


def facts_for(spec: Spec, held_out: float = 0.0) -> Facts:
    return Facts(spec=spec, plan=plan_for(spec, held_out), hidden_size=model_hidden_size(spec))
