"""One guarded YAML reader for files tunelog did not write itself (specs, a run's logged spec.yaml,
imported configs): size, UTF-8, depth and alias-bomb limits, each refusal one SpecError line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError

MAX_SPEC_BYTES = 1_000_000  # a spec is a few kB; a megabyte is a mistake or an attack
MAX_SPEC_VALUES = 100_000  # values after YAML aliases are expanded (an alias bomb expands to billions)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The spec file as data; anything that is not a reasonable YAML mapping is one SpecError line."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(str(path), [("", "file not found")])
    size = p.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            str(path),
            [("", f"file of {size:,} bytes refused; accepted: a YAML spec of at most {MAX_SPEC_BYTES:,} bytes")],
        )
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            str(path),
            [
                (
                    "",
                    f"not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r});"
                    f" accepted: a YAML file saved as UTF-8",
                )
            ],
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [("", f"not valid YAML: {exc}".replace("\n", " "))]) from None
    except RecursionError:
        raise SpecError(str(path), [("", "YAML nested too deeply; accepted: a spec of plain sections")]) from None
    if not isinstance(raw, dict):
        raise SpecError(
            str(path), [("", "expected a mapping of sections (model, data, lora, train, tracking, configs)")]
        )
    if expanded_size(raw) > MAX_SPEC_VALUES:
        raise SpecError(
            str(path),
            [
                (
                    "",
                    f"expands to more than {MAX_SPEC_VALUES:,} values (YAML aliases?); "
                    f"accepted: a spec without alias bombs",
                )
            ],
        )
    return raw


def expanded_size(data: Any, limit: int = MAX_SPEC_VALUES) -> int:
    """Values in the data as if every alias were copied out, counted without recursion and
    stopping early (past `limit`): PyYAML shares an aliased node, so the bomb is small until
    something walks it. Specs and imported configs both ask."""
    count, stack = 0, [data]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count
