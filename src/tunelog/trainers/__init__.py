"""Trainers: a Protocol plus a register function, so a new one is a short file.

A trainer takes a resolved Spec and an open run and returns a Result. `hf` is the
built-in peft/transformers trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..spec import Spec
from ..tracking import RunLogger
from .registry import Capabilities, capabilities, get_trainer, register_trainer, trainer_names


@dataclass
class Result:
    """What a training run ended with; the trainer has already logged the details to the run."""

    outcome: str  # one of tracking.OUTCOMES
    reason: str = ""
    steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # final values, e.g. eval/loss

    def headline(self, metric: str) -> float | None:
        return self.metrics.get(metric)


EvalHook = Callable[[int, float], bool]
"""Called with (step, eval loss) at each eval; returning True stops training (a pruned sweep trial)."""


class Trainer(Protocol):
    def train(self, spec: Spec, run: RunLogger, on_eval: EvalHook | None = None) -> Result: ...


__all__ = [
    "Capabilities",
    "EvalHook",
    "Result",
    "Trainer",
    "capabilities",
    "get_trainer",
    "register_trainer",
    "trainer_names",
]
