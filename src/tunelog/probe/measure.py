"""What the probe measures and the pure helpers it decides with: candidates (a grid over the knobs),
memory order and dominance, the `Measurer` protocol both measurers follow, step-time statistics
and the ETA."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from ..errors import SpecError
from ..spec import ParamSpec, ProbeSpec, Spec
from ..spec.expressions import ExpressionError, parse
from ..spec.plan import make_plan
from ..spec.rules import expression_env
from ..spec.scope import PLAN_NAMES
from ..trainers.registry import capabilities
from ..vocabulary import Outcome

BATCH = "train.batch_size"
ACCUM = "train.grad_accum"
# memory grows with these (True before False for gradient checkpointing: it saves memory)
MEMORY_KNOBS = {BATCH: 1, "lora.r": 1, "data.max_length": 1, "model.gradient_checkpointing": -1}
DEFAULT_PARAMS = {
    BATCH: ParamSpec(type="categorical", choices=[1, 2, 4, 8, 16, 32, 64]),
    "lora.r": ParamSpec(type="categorical", choices=[8, 16, 32]),
}
QUICK_CANDIDATES = 6
DECLINE = 0.9  # a measurement below this share of its group's best counts as falling
FALLING_IN_A_ROW = 2  # the batch walk stops after this many falling measurements in a row (one is noise)
# finalists within this share of the fastest are a tie, and the tie goes to the largest batch: on a shared
# machine one config's rounds spread wider than this, and throughput grows with the batch until it saturates
TIE = 0.03


@dataclass
class Measurement:
    values: dict[str, Any]
    outcome: str  # ok, oom, failed (crashed, diverged, gave nothing to time), skipped, rejected (a spec rule)
    reason: str = ""
    samples_per_s: float = 0.0
    tokens_per_s: float = 0.0
    peak_gb: float = 0.0
    eta_s: Optional[float] = None
    steps: int = 0
    run_id: Optional[str] = None


@dataclass
class ProbeResult:
    run_id: str
    measured: list[Measurement] = field(default_factory=list)
    skipped: list[Measurement] = field(default_factory=list)
    rejected: list[Measurement] = field(default_factory=list)  # forbidden by the spec's rules: never run
    accum: int = 1  # the spec's gradient accumulation, where a candidate does not set its own
    best: Optional[Measurement] = None
    grid_size: int = 0
    script: str = ""
    runoff: list[dict[str, Any]] = field(default_factory=list)  # the finalists measured again, side by side

    def summary(self) -> dict[str, Any]:
        ok = [m for m in self.measured if m.outcome == Outcome.OK]
        return {
            "grid": self.grid_size,
            "tested": len(self.measured),
            "successful": len(ok),
            "measured": [
                {
                    "config": m.values,
                    "outcome": m.outcome,
                    "samples_per_s": m.samples_per_s,
                    "peak_mem_gb": m.peak_gb,
                    "reason": m.reason,
                    "effective_batch": f"{m.values.get(BATCH)} x {m.values.get(ACCUM, self.accum)} = "
                    f"{m.values.get(BATCH, 0) * m.values.get(ACCUM, self.accum)}",
                }
                for m in self.measured
            ],
            "failed_oom": [m.values for m in self.measured if m.outcome == Outcome.OOM],
            "failed": [{"config": m.values, "why": m.reason} for m in self.measured if m.outcome == Outcome.FAILED],
            "skipped": [{"config": m.values, "why": m.reason} for m in self.skipped],
            "rejected": [{"config": m.values, "rule": m.reason} for m in self.rejected],
            "best": None
            if self.best is None
            else {
                "config": self.best.values,
                "samples_per_s": self.best.samples_per_s,
                "tokens_per_s": self.best.tokens_per_s,
                "peak_mem_gb": self.best.peak_gb,
                "eta_s": self.best.eta_s,
            },
            "runoff": self.runoff,
        }


def values_of(p: ParamSpec) -> list[Any]:
    """A knob's values to try: categorical choices, or every step of an int/float range."""
    if p.type == "categorical":
        return list(p.choices or [])
    step = p.step or 1
    n = int(math.floor((p.max - p.min) / step + 1e-9)) + 1  # type: ignore[operator]
    vals = [p.min + i * step for i in range(n)]  # type: ignore[operator]
    return [int(v) for v in vals] if p.type == "int" else vals


def grid(params: dict[str, ParamSpec]) -> list[dict[str, Any]]:
    names = sorted(params)
    return [dict(zip(names, combo)) for combo in itertools.product(*(values_of(params[n]) for n in names))]


def memory_rank(name: str, value: Any, knobs: dict[str, int] = MEMORY_KNOBS) -> float:
    """A knob's value on a scale where larger means more memory."""
    direction = knobs.get(name, 0)
    return float(value) * direction if direction else 0.0


def at_least_as_large(a: dict[str, Any], b: dict[str, Any], knobs: dict[str, int] = MEMORY_KNOBS) -> bool:
    """True when `a` needs at least the memory of `b` in every memory knob they share."""
    return all(memory_rank(k, a[k], knobs) >= memory_rank(k, b[k], knobs) for k in a if k in knobs and k in b)


def group_key(values: dict[str, Any], knobs: dict[str, int] = MEMORY_KNOBS) -> tuple:
    """The memory knobs but the batch size: candidates that differ only in batch size share a group."""
    return tuple(sorted((k, v) for k, v in values.items() if k != BATCH and k in knobs))


class Measurer(Protocol):
    """Measures one candidate; `prepare` runs once per probe (loads what can be shared)."""

    def prepare(self) -> Optional[int]:
        """Sets up once; returns the training set's size (for the ETA) where known."""

    def measure(self, values: dict[str, Any]) -> Measurement: ...

    def command(self, best: Measurement) -> str:
        """A ready-to-run shell command that trains with the winner's settings."""


def eta_seconds(spec: Spec, samples_per_s: float, n_samples: Optional[int]) -> Optional[float]:
    """The full training's time at this throughput: `probe.total_steps` (evaluated for this candidate) x samples
    per step when the spec gives it, else max_steps x samples per step, else dataset x epochs; None when unknown."""
    per_step = spec.train.batch_size * spec.train.grad_accum
    formula = spec.probe.total_steps if spec.probe else None
    if formula:
        uses_plan = bool(set(parse(formula).names) & set(PLAN_NAMES))
        if uses_plan and n_samples is None:
            return None  # a training set only the script reads: no plan, so no ETA ("unknown (no dataset size)")
        env = expression_env(spec, make_plan(spec, n_samples) if n_samples is not None else None)
        try:
            steps = float(parse(formula).evaluate(env))
        except (ExpressionError, TypeError, ValueError) as exc:
            raise SpecError(spec.source, [("probe.total_steps", f"{formula!r} cannot be evaluated: {exc}")]) from None
        return steps * per_step / samples_per_s
    if not capabilities(spec.trainer.type).in_process:
        return None  # the script decides its own length; without probe.total_steps tunelog cannot know it
    if spec.train.max_steps:
        return spec.train.max_steps * per_step / samples_per_s
    if n_samples is None:
        return None
    return n_samples * (spec.train.epochs or 1.0) / samples_per_s


def step_time(times: list[float]) -> float:
    """The lower quartile of the measured step times.

    Interference (another process, a page fault, the OS) only ever makes a step slower, so the
    faster steps are the config's own speed; the lower quartile keeps that and still ignores a
    single lucky step. On a shared 2-core machine the median moved 5-15% between two
    measurements of one config, too much to rank configs a few percent apart.
    """
    ordered = sorted(times)
    return ordered[(len(ordered) - 1) // 4]


def _enough(times: list[float], cfg: ProbeSpec) -> bool:
    """Stop once the estimate has settled (or the step cap is hit), after at least `min_seconds` measured;
    a step slower than `min_seconds` on its own ends the measurement at the cap."""
    n = len(times)
    if n >= 5 * cfg.max_steps:
        return True
    if sum(times) < cfg.min_seconds:
        return False
    if n >= cfg.max_steps:
        return True
    return n >= 6 and abs(step_time(times) - step_time(times[:-3])) <= cfg.stable_within * step_time(times[:-3])
