"""Validation problems said the way a user reads them: `field.path: what is wrong (got VALUE)`."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError


def validation_problems(err: ValidationError, root: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """pydantic's errors as `(field.path, message)` pairs; an unknown key lists the keys its section accepts."""
    problems = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-after"))
        path = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        kind = item["type"]
        if kind == "extra_forbidden":
            parent = loc.rsplit(".", 1)[0] if "." in loc else ""
            msg = f"unknown key; accepted: {', '.join(accepted_keys(root, parent))}"
        elif kind == "missing":
            msg = "required field is missing"
        else:
            msg = item["msg"].removeprefix("Value error, ")
            if kind != "value_error" and "input" in item and not isinstance(item["input"], dict):
                msg += f" (got {item['input']!r})"
        problems.append((path, msg))
    return problems


def accepted_keys(root: type[BaseModel], dotted_parent: str) -> list[str]:
    """The field names of the section at `dotted_parent`, for 'unknown key' messages."""
    model = root
    for part in [p for p in dotted_parent.split(".") if p]:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        inner = [
            a
            for a in getattr(annotation, "__args__", (annotation,))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if not inner:
            return []
        model = inner[0]
    return [name for name in model.model_fields if name not in ("source", "base_dir", "config_name")]
