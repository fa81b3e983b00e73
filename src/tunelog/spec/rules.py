"""Rules: the facts a spec's rules see, and judging a config by them.

One engine for `lint` (the spec's own rules beside the built-in ones), the sweep (hard
constraints as named Optuna constraints, seeded soft rules) and the probe. A rule is
`reject: EXPR` or `if: EXPR` + `require: [EXPR, ...]` in the whitelist expression language.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import SpecError
from .expressions import ExpressionError, parse
from .plan import TrainingPlan, make_plan
from .schema import RuleSpec, Spec
from .scope import with_leaves


@dataclass(frozen=True)
class Facts:
    """What the rules look at: the spec, its training plan, and the model's hidden size when known."""

    spec: Spec
    plan: TrainingPlan
    hidden_size: Optional[int]

    @property
    def peak(self) -> float:
        return plan_values(self.spec, self.plan)["peak_lr"]


def plan_values(spec: Spec, plan: TrainingPlan) -> dict[str, Any]:
    """The training plan's numbers under the names expressions use: exactly `scope.PLAN_NAMES`."""
    schedule = plan.schedule
    return {
        "n_samples": plan.n_samples,
        "effective_batch": plan.effective_batch,
        "total_steps": plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "warmup": schedule.warmup_steps,
        "peak_lr": max(schedule.lr_at(step) for step in schedule.milestones()),
        "alpha_ratio": spec.lora.alpha / spec.lora.r,
    }


def expression_env(spec: Spec, plan: Optional[TrainingPlan]) -> dict[str, Any]:
    """The one environment of names an expression is evaluated in (rules, constraints, soft rules,
    `probe.total_steps`): every dotted spec field, its leaf name where unique, and the plan's numbers.
    `scope.check_names` accepts exactly these names at load, so what validation passes evaluation has."""
    env: dict[str, Any] = with_leaves(spec.flat_params())
    if plan is not None:
        env.update(plan_values(spec, plan))
    return env


def rule_env(facts: Facts) -> dict[str, Any]:
    """Names a spec rule may use (see `expression_env`)."""
    return expression_env(facts.spec, facts.plan)


def check_rule(rule: RuleSpec, env: dict[str, Any], source: str, where: str) -> Optional[bool]:
    """True when the rule is broken, False when kept, None when it names something `env` lacks."""
    texts = [t for t in [rule.reject, rule.if_, *rule.require] if t]
    if any(n not in env for text in texts for n in parse(text).names):
        return None
    try:
        if rule.reject is not None:
            return bool(parse(rule.reject).evaluate(env))
        if rule.if_ is not None and not parse(rule.if_).evaluate(env):
            return False
        return not all(parse(t).evaluate(env) for t in rule.require)
    except ExpressionError as exc:
        raise SpecError(source, [(where, f"rule {rule.name!r}: {exc}")]) from None


def missing_names(rule: RuleSpec, env: dict[str, Any]) -> list[str]:
    """The names a rule uses that `env` lacks (a sweep helper when linting a spec alone)."""
    return sorted({n for text in (rule.reject, rule.if_, *rule.require) if text for n in parse(text).names} - set(env))


@dataclass
class Verdict:
    """Why a candidate config is rejected before anything is loaded ('' rule = accepted)."""

    rule: str = ""
    reason: str = ""
    broken: dict[str, float] = field(default_factory=dict)  # every hard rule: 1.0 broken, 0.0 kept

    @property
    def rejected(self) -> bool:
        return bool(self.rule)


def hard_rules(spec: Spec) -> list[RuleSpec]:
    """The rules that reject: the sweep's constraints (when there is a sweep) and the spec's error-severity
    rules; one list of safety rules for lint, sweep and probe."""
    return (list(spec.search.constraints) if spec.search else []) + [r for r in spec.rules if r.severity == "error"]


def judge(spec: Spec, env: dict[str, Any], seed: int, key: str, probe: bool = False) -> Verdict:
    """Check every hard rule (recording each as a named constraint) and then the soft rules.

    For a probe candidate (`probe`), soft rules do not apply (they thin out a sweep's sampling, they do not
    forbid a config) and a rule naming a sweep helper the probe does not set cannot be judged: it is kept."""
    verdict = Verdict()
    for i, rule in enumerate(hard_rules(spec)):
        broken = check_rule(rule, env, spec.source, f"search.constraints[{i}]")
        if broken is None and probe:
            continue
        if broken is None:
            raise SpecError(
                spec.source, [(f"rule {rule.name}", f"unknown name(s) {', '.join(missing_names(rule, env))}")]
            )
        verdict.broken[rule.name] = 1.0 if broken else 0.0
        if broken and not verdict.rule:
            verdict.rule, verdict.reason = rule.name, rule.reason or rule.name
    if verdict.rejected or probe or spec.search is None:
        return verdict
    for soft in spec.search.soft:
        try:
            applies = bool(parse(soft.when).evaluate(env))
        except ExpressionError as exc:
            raise SpecError(spec.source, [(f"search.soft.{soft.name}", str(exc))]) from None
        if applies and _draw(seed, soft.name, key) >= soft.probability:
            verdict.rule = soft.name
            verdict.reason = f"{soft.reason or soft.name} (soft rule: accepted with p={soft.probability:g})"
            return verdict
    return verdict


def _draw(seed: int, rule: str, key: str) -> float:
    """A uniform draw fixed by the sweep seed, the rule and the config: the same config, the same fate."""
    digest = hashlib.sha256(f"{seed}|{rule}|{key}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16)).random()


def config_key(values: dict[str, Any]) -> str:
    return "|".join(f"{k}={values[k]!r}" for k in sorted(values))


def judge_config(spec: Spec, values: dict[str, Any], n_samples: int, hidden: Optional[int], seed: int) -> Verdict:
    """A sweep trial judged in one call: the spec (with the trial's values applied) and its sampled
    helpers are the rules' facts."""
    env = {**rule_env(Facts(spec, make_plan(spec, n_samples), hidden)), **values}
    return judge(spec, env, seed, config_key(values))
