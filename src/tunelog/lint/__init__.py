"""`lint`: the config doctor. Checks what a spec will actually do before any weight is loaded.

Built-in rules live in `rules.py`, one small function each, registered by id; the
spec's own `rules:` (the expression language sweep constraints use too) run beside
them. A finding has an id, a severity, a message with the numbers, and the fix.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import SpecError
from ..expressions import ExpressionError, parse
from ..plan import TrainingPlan, plan_for
from ..spec import RuleSpec, Spec

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # error, warning, info
    message: str
    fix: str = ""


@dataclass(frozen=True)
class Facts:
    """What the rules look at: the spec, its training plan, and the model's hidden size when known."""

    spec: Spec
    plan: TrainingPlan
    hidden_size: Optional[int]

    @property
    def peak(self) -> float:
        s = self.plan.schedule
        return max(s.lr_at(step) for step in s.milestones())


@dataclass
class LintReport:
    file: str
    findings: list[Finding] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)

    def of(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def has_errors(self) -> bool:
        return bool(self.of("error"))

    def summary(self) -> str:
        counts = [f"{len(self.of(s))} {s}{'s' if len(self.of(s)) != 1 and s != 'info' else ''}" for s in SEVERITIES]
        return f"{self.file}: {', '.join(counts)}"

    def to_json(self) -> str:
        return json.dumps({"file": self.file, "plan": self.plan,
                           "counts": {s: len(self.of(s)) for s in SEVERITIES},
                           "findings": [asdict(f) for f in self.findings]}, indent=2)

    def note_line(self) -> str:
        """One line for the run's note: what lint warned about before training."""
        warnings = self.of("warning")
        if not warnings:
            return ""
        return "Lint warnings: " + "; ".join(f"{w.rule}: {w.message}" for w in warnings)

    def to_text(self) -> str:
        lines = [self.summary()]
        for f in sorted(self.findings, key=lambda f: SEVERITIES.index(f.severity)):
            lines.append(f"{f.severity:<8} {f.rule}: {f.message}")
            if f.fix:
                lines.append(f"{'':<9}fix: {f.fix}")
        return "\n".join(lines)


def model_hidden_size(spec: Spec) -> Optional[int]:
    """The hidden size, from the tiny config or a local model's config.json; None when unknown (no hub)."""
    if spec.model.tiny is not None:
        return spec.model.tiny.hidden_size
    config = Path(spec.model.name or "") / "config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        return data.get("hidden_size") or data.get("d_model") or data.get("n_embd")
    return None


def facts_for(spec: Spec) -> Facts:
    return Facts(spec=spec, plan=plan_for(spec), hidden_size=model_hidden_size(spec))


def rule_env(facts: Facts) -> dict[str, Any]:
    """Names a spec rule may use: every dotted spec field, its leaf name where unique, and the plan's numbers."""
    flat = facts.spec.flat_params()
    env: dict[str, Any] = dict(flat)
    leaves: dict[str, list[str]] = {}
    for key in flat:
        leaves.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    env.update({leaf: flat[keys[0]] for leaf, keys in leaves.items() if len(keys) == 1 and leaf not in env})
    p = facts.plan
    env.update({"n_samples": p.n_samples, "effective_batch": p.effective_batch, "total_steps": p.total_steps,
                "steps_per_epoch": p.steps_per_epoch, "warmup": p.schedule.warmup_steps, "peak_lr": facts.peak,
                "alpha_ratio": facts.spec.lora.alpha / facts.spec.lora.r})
    return env


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


def _user_rule_findings(facts: Facts) -> list[Finding]:
    env = rule_env(facts)
    findings = []
    for i, rule in enumerate(facts.spec.rules):
        broken = check_rule(rule, env, facts.spec.source, f"rules[{i}]")
        if broken is None:
            missing = sorted({n for t in [rule.reject, rule.if_, *rule.require] if t for n in parse(t).names} - set(env))
            findings.append(Finding(rule.name, "info", f"not checked here: needs {', '.join(missing)} "
                                                       f"(a sweep parameter?)"))
        elif broken:
            findings.append(Finding(rule.name, rule.severity, rule.reason or f"rule {rule.name!r} is broken",
                                    "change the config so the rule holds, or edit the rule in the spec"))
    return findings


def lint_spec(spec: Spec) -> LintReport:
    """Run every built-in rule and the spec's own rules; nothing is loaded but the data's sample count."""
    from .rules import builtin_rules

    facts = facts_for(spec)
    report = LintReport(file=spec.source)
    for check in builtin_rules():
        report.findings.extend(check(facts))
    report.findings.extend(_user_rule_findings(facts))
    p = facts.plan
    report.plan = {"n_samples": p.n_samples, "effective_batch": p.effective_batch,
                   "steps_per_epoch": p.steps_per_epoch, "total_steps": p.total_steps, "epochs": round(p.epochs, 3),
                   "warmup_steps": p.schedule.warmup_steps, "peak_lr": facts.peak, "schedule": p.schedule.name}
    return report


__all__ = ["Facts", "Finding", "LintReport", "check_rule", "facts_for", "lint_spec", "rule_env"]
