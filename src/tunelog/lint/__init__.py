"""`lint`: the config doctor. Checks what a spec will actually do before any weight is loaded.

Built-in rules live in `builtin.py`, one small function each, registered by id; the
spec's own `rules:` (judged by `tunelog.spec.rules`, the engine sweeps use too) run beside
them. A finding has an id, a severity, a message with the numbers, and the fix.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..spec import Spec
from ..spec.rules import Facts, check_rule, missing_names, rule_env
from ..training.facts import facts_for

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # error, warning, info
    message: str
    fix: str = ""


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
        return json.dumps(
            {
                "file": self.file,
                "plan": self.plan,
                "counts": {s: len(self.of(s)) for s in SEVERITIES},
                "findings": [asdict(f) for f in self.findings],
            },
            indent=2,
        )

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


def _user_rule_findings(facts: Facts) -> list[Finding]:
    env = rule_env(facts)
    findings = []
    for i, rule in enumerate(facts.spec.rules):
        broken = check_rule(rule, env, facts.spec.source, f"rules[{i}]")
        if broken is None:
            findings.append(
                Finding(
                    rule.name,
                    "info",
                    f"not checked here: needs {', '.join(missing_names(rule, env))} (a sweep parameter?)",
                )
            )
        elif broken:
            findings.append(
                Finding(
                    rule.name,
                    rule.severity,
                    rule.reason or f"rule {rule.name!r} is broken",
                    "change the config so the rule holds, or edit the rule in the spec",
                )
            )
    return findings


def _held_out(spec: Spec) -> float:
    """What a LLaMA-Factory config on the command line holds out of the training file (`val_size`), else 0."""
    from ..trainers.outputs import config_on_command_line
    from ..trainers.script import script_cwd

    if spec.trainer.type != "command":
        return 0.0
    _, config = config_on_command_line(list(spec.trainer.argv), script_cwd(spec))
    value = config.get("val_size", 0) if config else 0
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0.0


def lint_spec(spec: Spec) -> LintReport:
    """Run every built-in rule and the spec's own rules; nothing is loaded but the data's sample count."""
    from .builtin import builtin_rules

    held_out = _held_out(spec)
    facts = facts_for(spec, held_out)
    report = LintReport(file=spec.source)
    if held_out:
        share = f"{held_out:.0%}" if held_out < 1 else f"{int(held_out)} samples"
        report.findings.append(
            Finding(
                "held-out",
                "info",
                f"the script's config holds {share} of data.train out (val_size): planned without it",
            )
        )
    for check in builtin_rules():
        report.findings.extend(check(facts))
    report.findings.extend(_user_rule_findings(facts))
    p = facts.plan
    report.plan = {
        "n_samples": p.n_samples,
        "effective_batch": p.effective_batch,
        "steps_per_epoch": p.steps_per_epoch,
        "total_steps": p.total_steps,
        "epochs": round(p.epochs, 3),
        "warmup_steps": p.schedule.warmup_steps,
        "peak_lr": facts.peak,
        "schedule": p.schedule.name,
    }
    return report


__all__ = ["Finding", "LintReport", "lint_spec"]
