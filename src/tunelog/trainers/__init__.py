"""Trainers: a Protocol plus a register function, so a new one is a short file.

A trainer takes a resolved Spec and an open run and returns a Result. `hf` is the
built-in peft/transformers trainer.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, Union

from ..errors import TunelogError
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


Factory = Union[Callable[[], Trainer], str]  # a callable, or "package.module:Class" imported on first use

_TRAINERS: dict[str, Factory] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


def register_trainer(name: str, factory: Factory) -> None:
    """Adds a trainer under `name` (what `trainer.type` names). A module path is imported only when the
    trainer is used, so a spec can be validated without importing torch."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise TunelogError(
            f"trainer name {name!r} refused; accepted: lowercase letters, digits, '-' and '_', starting with a letter"
        )
    if name in _TRAINERS:
        raise TunelogError(f"a trainer named {name!r} is already registered")
    _TRAINERS[name] = factory


def trainer_names() -> list[str]:
    return sorted(_TRAINERS)


def get_trainer(name: str) -> Trainer:
    if name not in _TRAINERS:
        raise TunelogError(f"no trainer named {name!r}; accepted: {', '.join(trainer_names())}")
    factory = _TRAINERS[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory()


register_trainer("hf", "tunelog.trainers.hf:HFTrainer")
register_trainer("command", "tunelog.trainers.command:CommandTrainer")

__all__ = ["EvalHook", "Result", "Trainer", "get_trainer", "register_trainer", "trainer_names"]
