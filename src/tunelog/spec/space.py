"""The search space, in the spec's own terms: target checks, derived params, narrowing.

Pure functions over plain dicts; `sweep/` is the one place that turns these into
Optuna distributions and trials, and `rules.py` judges the configs. Names with a dot
(`train.learning_rate`) target spec fields; names without one (`alpha_ratio`) are
helper variables for derived params and rules.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from ..errors import SpecError
from .expressions import ExpressionError, parse
from .schema import ParamSpec, SearchSpec, Spec
from .scope import derived_order


def check_targets(spec: Spec) -> None:
    """Every dotted param or derived name must be a field of the spec."""
    assert spec.search is not None
    fields = set(spec.flat_params())
    problems = []
    for section, names in (("search.params", spec.search.params), ("search.derived", spec.search.derived)):
        for name in names:
            if "." in name and name not in fields:
                problems.append(
                    (
                        f"{section}.{name}",
                        "not a spec field; dotted names must be spec fields such as "
                        "train.learning_rate or lora.r (names without a dot are "
                        "helper variables)",
                    )
                )
    if problems:
        raise SpecError(spec.source, problems)


def derive(
    search: SearchSpec,
    sampled: dict[str, Any],
    source: str,
    fixed: Optional[dict[str, Any]] = None,
    skip_unknown: bool = False,
) -> dict[str, Any]:
    """Evaluate derived params in dependency order; each may use sampled names, other derived params
    and the spec's fixed fields (`fixed`, e.g. `lora.r` when the sweep does not sample it).

    With `skip_unknown` (a probe candidate: no sweep helper is sampled), a derived param that names
    something not in scope is left out, so the field keeps the spec's value."""
    env = {**(fixed or {}), **sampled}
    out: dict[str, Any] = {}
    for name in derived_order(search.derived, source):
        expr = parse(search.derived[name])
        if skip_unknown and not expr.names <= set(env):
            continue
        try:
            env[name] = out[name] = expr.evaluate(env)
        except ExpressionError as exc:
            raise SpecError(source, [(f"search.derived.{name}", str(exc))]) from None
    return out


def spec_overrides(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if "." in k}


def narrow(
    params: dict[str, ParamSpec], top: list[dict[str, Any]], margin: float = 0.2
) -> tuple[dict[str, ParamSpec], list[str]]:
    """A space around the best trials: ranges shrunk to their span plus a margin, categoricals to the values seen."""
    out: dict[str, ParamSpec] = {}
    said: list[str] = []
    for name, p in params.items():
        seen = [t[name] for t in top if name in t]
        if not seen:
            out[name] = p
            continue
        if p.type == "categorical":
            kept = [c for c in p.choices or [] if c in seen]
            out[name] = p.model_copy(update={"choices": kept})
            if len(kept) < len(p.choices or []):
                said.append(f"{name}: {p.choices} -> {kept}")
            continue
        low, high = _span(p, min(seen), max(seen), margin)
        if p.type == "int":
            low, high = math.floor(low), math.ceil(high)
        out[name] = p.model_copy(update={"min": low, "max": high})
        said.append(f"{name}: [{p.min:g}, {p.max:g}] -> [{low:g}, {high:g}]")
    return out, said


def _span(p: ParamSpec, lo: float, hi: float, margin: float) -> tuple[float, float]:
    assert p.min is not None and p.max is not None
    if p.log:
        a, b = math.log(lo), math.log(hi)
        pad = max((b - a) * margin, math.log(1 + margin))
        return max(p.min, math.exp(a - pad)), min(p.max, math.exp(b + pad))
    pad = (hi - lo) * margin if hi > lo else max(abs(hi) * margin, 1e-12)  # one value seen: a band around it
    return max(p.min, lo - pad), min(p.max, hi + pad)


def check_enqueue(params: dict[str, ParamSpec], overrides: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The named config's values for searched params, keeping those the space can hold."""
    kept, dropped = {}, []
    for name, value in overrides.items():
        p = params.get(name)
        if p is None:
            continue
        ok = (
            value in (p.choices or [])
            if p.type == "categorical"
            else (isinstance(value, (int, float)) and p.min <= value <= p.max)
        )  # type: ignore[operator]
        (kept.__setitem__(name, value) if ok else dropped.append(f"{name}={value!r}"))
    return kept, dropped
