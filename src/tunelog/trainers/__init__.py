"""Trainers: a Protocol plus a register function, so a new one is a short file.

A trainer takes a resolved Spec and an open run and returns a Result. `hf` is the
built-in peft/transformers trainer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..spec import Spec
from ..tracking import RunLogger


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


_TRAINERS: dict[str, Callable[[], Trainer]] = {}


def register_trainer(name: str, factory: Callable[[], Trainer]) -> None:
    _TRAINERS[name] = factory


def get_trainer(name: str) -> Trainer:
    if name not in _TRAINERS:
        raise KeyError(f"trainer {name!r}; accepted: {', '.join(sorted(_TRAINERS))}")
    return _TRAINERS[name]()


def _register_builtins() -> None:
    from .command import CommandTrainer
    from .hf import HFTrainer

    register_trainer("hf", HFTrainer)
    register_trainer("command", CommandTrainer)


_register_builtins()

__all__ = ["EvalHook", "Result", "Trainer", "register_trainer", "get_trainer"]
