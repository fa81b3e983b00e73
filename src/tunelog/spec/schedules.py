"""Learning-rate schedules: pure functions of the optimizer step.

The trainer and `lint` both read the LR from here, so what lint prints is what
training does. Steps are 1-based: step 1 is the first optimizer update and step
`total_steps` the last, so "warmup of 100 steps" reaches the peak at step 100.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

ScheduleFn = Callable[["Schedule", int], float]
_REGISTRY: dict[str, ScheduleFn] = {}


def register_schedule(name: str) -> Callable[[ScheduleFn], ScheduleFn]:
    """Add a schedule under `name`; the spec's `train.schedule` accepts every registered name."""

    def wrap(fn: ScheduleFn) -> ScheduleFn:
        _REGISTRY[name] = fn
        return fn

    return wrap


def schedule_names() -> list[str]:
    return sorted(_REGISTRY)


@dataclass(frozen=True)
class Schedule:
    """Everything a schedule needs; built from the spec's `train` section by the trainer and lint."""

    name: str
    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    end_lr: float = 0.0
    anneal_steps: tuple[int, ...] = field(default_factory=tuple)
    anneal_rate: float = 0.5
    num_cycles: int = 1
    power: float = 1.0
    div_factor: float = 25.0

    def lr_at(self, step: int) -> float:
        """The learning rate used for optimizer step `step` (1-based)."""
        step = max(1, min(int(step), self.total_steps))
        return _REGISTRY[self.name](self, step)

    def milestones(self) -> list[int]:
        """Steps worth printing: warmup end, each anneal, quarter points and the last step."""
        points = {1, self.total_steps}
        if self.warmup_steps:
            points.add(min(self.warmup_steps, self.total_steps))
        points.update(s for s in self.anneal_steps if s <= self.total_steps)
        points.update(max(1, round(self.total_steps * q)) for q in (0.25, 0.5, 0.75))
        return sorted(points)


def _warmup(sched: Schedule, step: int, start_lr: float = 0.0) -> float | None:
    """Linear ramp from `start_lr` to the peak over the warmup; None once warmup is over."""
    if sched.warmup_steps and step <= sched.warmup_steps:
        return start_lr + (sched.peak_lr - start_lr) * step / sched.warmup_steps
    return None


def _progress(sched: Schedule, step: int) -> float:
    """Fraction of the decay phase done at `step`: 0 at the peak, 1 at the last step.

    The peak is the warmup's last step, or step 1 when there is no warmup, so a schedule
    without warmup starts at its peak.
    """
    anchor = max(sched.warmup_steps, 1)
    span = sched.total_steps - anchor
    if span <= 0:  # training ends at (or before) the peak: there is no decay phase
        return 0.0 if step <= anchor else 1.0
    return min(1.0, max(0.0, (step - anchor) / span))


def _cosine_between(high: float, low: float, p: float) -> float:
    return low + (high - low) * 0.5 * (1.0 + math.cos(math.pi * p))


@register_schedule("constant")
def _constant(sched: Schedule, step: int) -> float:
    warm = _warmup(sched, step)
    return sched.peak_lr if warm is None else warm


@register_schedule("linear")
def _linear(sched: Schedule, step: int) -> float:
    warm = _warmup(sched, step)
    if warm is not None:
        return warm
    return sched.peak_lr + (sched.end_lr - sched.peak_lr) * _progress(sched, step)


@register_schedule("cosine")
@register_schedule("warmup_cosine")
def _cosine(sched: Schedule, step: int) -> float:
    """`warmup_cosine` is `cosine` whose spec must set a warmup (checked by the spec)."""
    warm = _warmup(sched, step)
    if warm is not None:
        return warm
    return _cosine_between(sched.peak_lr, sched.end_lr, _progress(sched, step))


@register_schedule("cosine_with_restarts")
def _cosine_restarts(sched: Schedule, step: int) -> float:
    """Cosine to end_lr `num_cycles` times, jumping back to the peak at each restart."""
    warm = _warmup(sched, step)
    if warm is not None:
        return warm
    p = _progress(sched, step)
    if p >= 1.0:
        return sched.end_lr
    cycle_p = (p * sched.num_cycles) % 1.0
    return _cosine_between(sched.peak_lr, sched.end_lr, cycle_p)


@register_schedule("polynomial")
def _polynomial(sched: Schedule, step: int) -> float:
    warm = _warmup(sched, step)
    if warm is not None:
        return warm
    p = _progress(sched, step)
    return sched.end_lr + (sched.peak_lr - sched.end_lr) * (1.0 - p) ** sched.power


@register_schedule("onecycle")
def _onecycle(sched: Schedule, step: int) -> float:
    """Cosine up from peak/div_factor over the warmup, then cosine down to end_lr (torch's OneCycle shape)."""
    start = sched.peak_lr / sched.div_factor
    if sched.warmup_steps and step <= sched.warmup_steps:
        return _cosine_between(start, sched.peak_lr, step / sched.warmup_steps)
    return _cosine_between(sched.peak_lr, sched.end_lr, _progress(sched, step))


@register_schedule("noam")
def _noam(sched: Schedule, step: int) -> float:
    """Transformer ("Noam") schedule normalised to its peak: linear warmup, then peak * sqrt(warmup/step).

    Anneal steps multiply it by `anneal_rate` as FastSpeech2's ScheduledOptim does.
    """
    warm = _warmup(sched, step)
    base = warm if warm is not None else sched.peak_lr * math.sqrt(sched.warmup_steps / step)
    return base * sched.anneal_rate ** sum(1 for s in sched.anneal_steps if step >= s)


@register_schedule("step_anneal")
def _step_anneal(sched: Schedule, step: int) -> float:
    """Warmup, then the peak multiplied by `anneal_rate` once for each anneal step reached (step >= s)."""
    warm = _warmup(sched, step)
    if warm is not None:
        return warm
    passed = sum(1 for s in sched.anneal_steps if step >= s)
    return sched.peak_lr * sched.anneal_rate**passed
