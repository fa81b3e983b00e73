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


def solve_helpers(
    search: SearchSpec, values: dict[str, Any], written: dict[str, Any], source: str
) -> tuple[dict[str, Any], list[str]]:
    """A named config's sweep helpers (searched names that are no spec field, like `alpha_ratio`) set to the
    value that makes each derived field come out as the config writes it (`lora.alpha: 16` with `lora.r: 8`
    gives `alpha_ratio` 2.0): the trial then records the values it trains, not a sample it ignores.
    Returns (solved helpers, the derived fields no helper in range could produce)."""
    solved: dict[str, Any] = {}
    unmet: list[str] = []
    for target in derived_order(search.derived, source):
        if target not in written:
            continue
        expr = parse(search.derived[target])
        free = [n for n in expr.names if n in search.params and n not in values and n not in solved]
        env = {**written, **values, **solved}
        if len(free) != 1:
            if free or not _equal(_try(expr, env), written[target]):
                unmet.append(target)
            continue
        found = _solve(expr, env, free[0], search.params[free[0]], written[target])
        if found is None:
            unmet.append(target)
        else:
            solved[free[0]] = found
    return solved, unmet


def _solve(expr: Any, env: dict[str, Any], name: str, p: ParamSpec, want: Any) -> Any:
    """The value of `name` in its range for which `expr` gives `want`: each choice (or integer) tried, or
    bisection over a float range where the expression changes sign around `want`."""
    if p.type == "categorical" or p.type == "int":
        candidates = p.choices if p.type == "categorical" else range(int(p.min), int(p.max) + 1)
        return next((c for c in candidates or [] if _equal(_try(expr, {**env, name: c}), want)), None)
    lo, hi = float(p.min), float(p.max)  # type: ignore[arg-type]
    gap = lambda x: (_try(expr, {**env, name: x}) or 0.0) - want  # noqa: E731
    if gap(lo) * gap(hi) > 0:
        return None
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gap(lo) * gap(mid) > 0 else (lo, mid)
    best = min((lo, hi), key=lambda x: abs(gap(x)))
    return round(best, 12) if _equal(_try(expr, {**env, name: round(best, 12)}), want) else best


def _try(expr: Any, env: dict[str, Any]) -> Any:
    try:
        return expr.evaluate(env)
    except ExpressionError:
        return None


def _equal(got: Any, want: Any) -> bool:
    if isinstance(got, (int, float)) and isinstance(want, (int, float)) and not isinstance(got, bool):
        return abs(got - want) <= 1e-9 * max(1.0, abs(want))
    return got == want


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
