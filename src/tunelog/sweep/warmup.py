"""The pruner's warmup: no trial is judged before its loss means anything.

Why in the sweep's hook, not only in Optuna's pruner: a trial's length is its own (a searched epoch count
changes it), and a script's console reports a running train loss from step 1; a median over first steps
prunes trials for their initialisation. A trial is judged only once it is past `search.pruner.warmup` (a
share of its steps below 1, else a step count) and has reported `search.pruner.min_reports` values.
"""

from __future__ import annotations

import math
from typing import Optional

from ..spec import Spec
from ..spec.expressions import ExpressionError, parse
from ..spec.plan import make_plan
from ..spec.rules import expression_env


def trial_steps(spec: Spec, n_samples: int) -> int:
    """The trial's length as the spec knows it: `probe.total_steps` (a script's own length) when it gives
    one, else the plan's optimizer steps."""
    plan = make_plan(spec, n_samples)
    formula = spec.probe.total_steps if spec.probe else None
    if formula:
        try:
            return max(1, math.ceil(float(parse(formula).evaluate(expression_env(spec, plan)))))
        except (ExpressionError, TypeError, ValueError):
            pass  # lint says what is wrong with it; the plan's length still bounds the warmup
    return plan.total_steps


def warmup_steps(spec: Spec, n_samples: int) -> int:
    """The first step at which the trial may be pruned."""
    assert spec.search is not None
    warmup = spec.search.pruner.warmup
    return math.ceil(warmup * trial_steps(spec, n_samples)) if warmup < 1 else int(warmup)


class Gate:
    """One trial's reports: whether the pruner may judge it yet."""

    def __init__(self, spec: Spec, n_samples: int):
        assert spec.search is not None
        self.first_step = warmup_steps(spec, n_samples)
        self.min_reports = spec.search.pruner.min_reports
        self.reports = 0
        self.last: Optional[int] = None

    def open(self, step: int) -> bool:
        """Counts the report at `step`; True once the trial is past its warmup with enough reports."""
        self.reports += 1
        self.last = step
        return step >= self.first_step and self.reports >= self.min_reports
