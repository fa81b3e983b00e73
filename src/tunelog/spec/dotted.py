"""Dotted names (`train.learning_rate`): flattening a spec's sections, setting one value, `--set` options."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from ..errors import SpecError


def is_uri(text: str) -> bool:
    """`runs:/ID/adapter`, `models:/NAME@alias`, `s3://...`: not a local path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", text) is not None


PATH_FIELDS = (("model", "tokenizer"), ("model", "adapter"), ("data", "train"), ("data", "eval"))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to one level with dotted keys; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Write `value` at `a.b.c` inside nested dicts, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(raw)
    for key, value in flatten(overrides).items():
        set_dotted(merged, key, value)
    return merged


def parse_value(text: str) -> Any:
    """`--set train.learning_rate=1e-4`: the value is read as YAML so numbers stay numbers."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_set_options(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SpecError("--set", [(item, "expected KEY=VALUE, e.g. train.learning_rate=1e-4")])
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = parse_value(value)
        except (yaml.YAMLError, RecursionError) as exc:
            said = str(getattr(exc, "problem", None) or type(exc).__name__)
            raise SpecError(
                "--set",
                [(item, f"the value is not YAML ({said}); accepted: a number, a word, a quoted string or [a, list]")],
            ) from None
    return out
