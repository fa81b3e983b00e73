"""The trainer registry, a leaf: names, where each trainer's code lives and what it can do, with no
import of anything above it, so the spec can check `trainer.type` and the verbs can ask a trainer's
capabilities (instead of branching on its name) without importing torch or a trainer."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from ..errors import TunelogError


@dataclass(frozen=True)
class Capabilities:
    """What the verbs may rely on. `in_process`: tunelog's own loop runs the model (its params are
    tunelog's, its length known from the spec); else the user's script does. `loads_spec_model`: the
    trainer opens `model.name` itself, so its source is checked before a run exists. `probe_measurer`:
    "module:Class" the probe measures candidates with."""

    in_process: bool
    loads_spec_model: bool
    probe_measurer: str


Factory = Union[Callable[[], Any], str]  # a callable, or "package.module:Class" imported on first use

_TRAINERS: dict[str, tuple[Factory, Capabilities]] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


def register_trainer(name: str, factory: Factory, capabilities: Capabilities | None = None) -> None:
    """Adds a trainer under `name` (what `trainer.type` names). A module path is imported only when the
    trainer is used, so a spec can be validated without importing torch. Without capabilities a trainer
    is taken to run the user's script (the cautious answer to every question)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise TunelogError(
            f"trainer name {name!r} refused; accepted: lowercase letters, digits, '-' and '_', starting with a letter"
        )
    if name in _TRAINERS:
        raise TunelogError(f"a trainer named {name!r} is already registered")
    _TRAINERS[name] = (factory, capabilities or SCRIPT)


def trainer_names() -> list[str]:
    return sorted(_TRAINERS)


def _entry(name: str) -> tuple[Factory, Capabilities]:
    if name not in _TRAINERS:
        raise TunelogError(f"no trainer named {name!r}; accepted: {', '.join(trainer_names())}")
    return _TRAINERS[name]


def capabilities(name: str) -> Capabilities:
    return _entry(name)[1]


def load(ref: str) -> Any:
    """`package.module:Attr` imported."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_trainer(name: str) -> Any:
    factory = _entry(name)[0]
    return (load(factory) if isinstance(factory, str) else factory)()


IN_PROCESS = Capabilities(in_process=True, loads_spec_model=True, probe_measurer="tunelog.probe.inprocess:InProcess")
SCRIPT = Capabilities(in_process=False, loads_spec_model=False, probe_measurer="tunelog.probe.command:CommandMeasurer")

register_trainer("hf", "tunelog.trainers.hf:HFTrainer", IN_PROCESS)
register_trainer("command", "tunelog.trainers.command:CommandTrainer", SCRIPT)
