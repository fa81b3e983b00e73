"""A trial's run name: its sampled values as a person reads them in the runs table."""

from __future__ import annotations

from typing import Any


def short_values(params: dict[str, Any], limit: int = 64) -> str:
    """`lr=0.004 r=16`: a trial's sampled values as a run name shows them (leaf names, 3 significant digits)."""
    parts = []
    for name, value in params.items():
        leaf = {"learning_rate": "lr"}.get(name.rsplit(".", 1)[-1], name.rsplit(".", 1)[-1])
        parts.append(f"{leaf}={value:.3g}" if isinstance(value, float) else f"{leaf}={value}")
    text = " ".join(parts)
    while len(text) > limit and len(parts) > 1:  # whole values only: a name never ends mid-number
        parts.pop()
        text = " ".join(parts) + " …"
    return text
