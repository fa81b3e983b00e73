"""What a spec will do before it runs: sample count, optimizer steps, effective batch, the LR schedule.

The trainer runs this plan and `lint` checks it, so both see the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import SpecError
from .expressions import ExpressionError, parse
from .schedules import Schedule
from .schema import Spec


@dataclass(frozen=True)
class TrainingPlan:
    n_samples: int
    effective_batch: int
    steps_per_epoch: int
    total_steps: int
    schedule: Schedule

    @property
    def epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch


def peak_lr(spec: Spec) -> float:
    """The schedule's peak: `train.lr_formula` when set (as ported code computes it), else learning_rate."""
    t = spec.train
    if not t.lr_formula:
        return t.learning_rate
    try:
        value = parse(t.lr_formula).evaluate(dict(t.lr_vars))
    except ExpressionError as exc:
        raise SpecError(spec.source, [("train.lr_formula", str(exc))]) from None
    if not isinstance(value, (int, float)) or not value > 0:
        raise SpecError(spec.source, [("train.lr_formula", f"must give a positive number (got {value!r})")])
    return float(value)


def make_plan(spec: Spec, n_samples: int) -> TrainingPlan:
    t = spec.train
    batches = math.ceil(n_samples / t.batch_size)
    per_epoch = max(1, math.ceil(batches / t.grad_accum))
    total = t.max_steps or max(1, math.ceil((t.epochs or 1.0) * per_epoch))
    warmup = t.warmup_steps if t.warmup_steps is not None else round((t.warmup_ratio or 0.0) * total)
    schedule = Schedule(
        name=t.schedule,
        peak_lr=peak_lr(spec),
        total_steps=total,
        warmup_steps=warmup,
        end_lr=t.end_lr,
        anneal_steps=tuple(t.anneal_steps),
        anneal_rate=t.anneal_rate,
        num_cycles=t.num_cycles,
        power=t.power,
        div_factor=t.div_factor,
    )
    return TrainingPlan(
        n_samples=n_samples,
        effective_batch=t.batch_size * t.grad_accum,
        steps_per_epoch=per_epoch,
        total_steps=total,
        schedule=schedule,
    )
