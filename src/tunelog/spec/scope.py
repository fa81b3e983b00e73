"""Which names each spec expression may use, checked when the spec loads.

A rule, constraint, soft rule or derived param that names something the spec does not
have would otherwise fail minutes later, in the middle of a sweep, after a model load.
Here every expression is checked against the names it will see when it runs:

- rules, constraints, soft rules: every dotted spec field, its leaf where unique, the
  training plan's numbers (PLAN_NAMES), and the sweep's sampled and derived names;
- derived params: the spec's fields, the sampled names and the other derived params,
  evaluated in dependency order (a cycle is an error);
- `train.lr_formula`: the names in `train.lr_vars`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import SpecError
from .dotted import flatten
from .expressions import ExpressionError, parse

# The training plan's numbers an expression may use (rules.plan_values computes exactly these).
PLAN_NAMES = ("n_samples", "effective_batch", "total_steps", "steps_per_epoch", "warmup", "peak_lr", "alpha_ratio")


def leaf_names(flat: Iterable[str]) -> set[str]:
    """`learning_rate` for `train.learning_rate`: a field's last part, where no other field shares it."""
    seen: dict[str, int] = {}
    for key in flat:
        leaf = key.rsplit(".", 1)[-1]
        seen[leaf] = seen.get(leaf, 0) + 1
    return {leaf for leaf, n in seen.items() if n == 1}


def with_leaves(flat: dict[str, Any]) -> dict[str, Any]:
    """The spec's dotted fields and, where unique, their leaf names (`learning_rate`) with the same values:
    the names rules, constraints and `probe.total_steps` may use."""
    unique = leaf_names(flat)
    leaves = {key.rsplit(".", 1)[-1]: value for key, value in flat.items() if key.rsplit(".", 1)[-1] in unique}
    return {**leaves, **flat}


def derived_order(derived: dict[str, str], source: str) -> list[str]:
    """The derived params in an order where each comes after the derived params it uses.

    Written order is kept where it already works; a cycle (`a` uses `b`, `b` uses `a`, or `a`
    uses itself) is a spec error naming it, since no order can compute it.
    """
    uses = {name: {n for n in _names(text) if n in derived} for name, text in derived.items()}
    order: list[str] = []
    state: dict[str, str] = {}  # visiting / done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join(path[path.index(name) :] + [name])
            raise SpecError(
                source,
                [
                    (
                        f"search.derived.{path[-1]}",
                        f"derived params depend on each other in a "
                        f"cycle: {cycle}; accepted: each derived param "
                        f"uses sampled names, spec fields and other "
                        f"derived params, without a cycle",
                    )
                ],
            )
        state[name] = "visiting"
        for dep in sorted(uses[name], key=list(derived).index):
            visit(dep, path + [name])
        state[name] = "done"
        order.append(name)

    for name in derived:
        visit(name, [])
    return order


def check_names(spec: Any) -> None:
    """Every expression of the spec names only what it will see; raises SpecError listing each unknown name."""
    flat = set(spec.flat_params())
    for preset in spec.configs.values():  # a preset may add a field (a script's own knob)
        flat |= set(flatten(preset.overrides))
    sampled = set(spec.search.params) if spec.search else set()
    derived = set(spec.search.derived) if spec.search else set()
    rule_scope = flat | leaf_names(flat) | set(PLAN_NAMES) | sampled | derived
    problems: list[tuple[str, str]] = []

    def check(where: str, text: str | None, scope: set[str]) -> None:
        if not text:
            return
        missing = sorted(_names(text) - scope)
        if missing:
            problems.append(
                (where, f"unknown name(s) {', '.join(missing)} in {text!r}; names in scope: {', '.join(sorted(scope))}")
            )

    for i, rule in enumerate(spec.rules):
        for text in (rule.reject, rule.if_, *rule.require):
            check(f"rules[{i}] ({rule.name})", text, rule_scope)
    if spec.search:
        for i, rule in enumerate(spec.search.constraints):
            for text in (rule.reject, rule.if_, *rule.require):
                check(f"search.constraints[{i}] ({rule.name})", text, rule_scope)
        for soft in spec.search.soft:
            check(f"search.soft ({soft.name})", soft.when, rule_scope)
        for name, text in spec.search.derived.items():
            check(f"search.derived.{name}", text, flat | sampled | derived)
        if not problems:
            derived_order(spec.search.derived, spec.source)
    if spec.probe and spec.probe.total_steps:
        check("probe.total_steps", spec.probe.total_steps, rule_scope)
    if spec.train.lr_formula:
        check("train.lr_formula", spec.train.lr_formula, set(spec.train.lr_vars))
    if problems:
        raise SpecError(spec.source, problems)


def _names(text: str) -> set[str]:
    try:
        return set(parse(text).names)
    except ExpressionError:  # syntax problems are reported where the expression is validated
        return set()
