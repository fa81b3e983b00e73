"""Loading a spec: the file read through the safe YAML reader, validated with its named config and
`--set` overrides applied, every expression's names checked, its files looked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from ..errors import SpecError
from ..util.safe_yaml import read_yaml
from .dotted import apply_overrides, is_uri
from .problems import validation_problems
from .schema import Spec


def validate(
    raw: dict[str, Any],
    file: str,
    base_dir: str,
    config: Optional[str] = None,
    overrides: Optional[dict[str, Any]] = None,
    check_files: bool = True,
) -> Spec:
    """Raw data to a checked Spec with the named config and overrides applied; every problem reported.
    `check_files=False` for a spec a run logged: its files were on the training machine, and the reader
    (load_model, reproduce) says itself which it needs."""
    problems: list[tuple[str, str]] = []
    try:
        base = Spec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(file, validation_problems(err, Spec)) from None
    for name, preset in base.configs.items():  # every preset must be valid, not just the one asked for
        try:
            Spec.model_validate(apply_overrides(raw, preset.overrides))
        except ValidationError as err:
            problems += validation_problems(err, Spec, f"configs.{name}.overrides: ")
    if config is not None and config not in base.configs:
        accepted = ", ".join(base.configs) or "none defined"
        problems.append(("configs", f"no config named {config!r}; accepted: {accepted}"))
    if problems:
        raise SpecError(file, problems)
    merged = raw
    if config is not None:
        merged = apply_overrides(merged, base.configs[config].overrides)
    if overrides:
        merged = apply_overrides(merged, overrides)
    try:
        spec = Spec.model_validate(merged)
    except ValidationError as err:
        raise SpecError(file, validation_problems(err, Spec, "--set " if overrides else "")) from None
    spec = spec.model_copy(update={"source": file, "base_dir": base_dir, "config_name": config})
    from .scope import check_names  # scope reads the schema: imported here, not at the top

    check_names(spec)
    if check_files:
        _check_files(spec)
    return spec


def _check_files(spec: Spec) -> None:
    problems = []
    for field in ("train", "eval"):
        value = getattr(spec.data, field)
        if value is not None and not spec.path(value).exists():
            problems.append((f"data.{field}", f"file not found: {spec.path(value)}"))
    for name, value in spec.data.extra_eval.items():
        if not spec.path(value).exists():
            problems.append((f"data.extra_eval.{name}", f"file not found: {spec.path(value)}"))
    if spec.pipeline:
        for i, stage in enumerate(spec.pipeline.stages):
            for field in ("train", "eval"):
                value = getattr(stage, field)
                if value is not None and not spec.path(value).exists():
                    problems.append((f"pipeline.stages[{i}].{field}", f"file not found: {spec.path(value)}"))
    adapter = spec.model.adapter
    if adapter and not is_uri(adapter) and not spec.path(adapter).exists():
        problems.append(("model.adapter", f"folder not found: {spec.path(adapter)}"))
    if spec.model.tokenizer and not spec.path(spec.model.tokenizer).exists():
        problems.append(("model.tokenizer", f"file not found: {spec.path(spec.model.tokenizer)}"))
    if problems:
        raise SpecError(spec.source, problems)


def load_spec(path: str | Path, config: Optional[str] = None, overrides: Optional[dict[str, Any]] = None) -> Spec:
    """Read, validate and resolve a spec file. Raises SpecError naming every problem."""
    raw = read_yaml(path)
    return validate(raw, str(path), str(Path(path).resolve().parent), config, overrides)
