"""tunelog: LoRA fine-tuning experiments recorded on MLflow, reproducible and comparable."""

from .errors import MachineError, SpecError, TunelogError
from .spec import Spec, load_spec
from .spec.schedules import Schedule, schedule_names
from .tracking import Tracker, tracking_uri
from .util.quiet import quiet_libraries

quiet_libraries()


def load_model(uri: str, device=None):
    """`models:/NAME@champion` -> LoadedModel(model, tokenizer, device): the base model with the adapter
    applied, in eval mode. See tunelog.promote.load_model."""
    from .promote import load_model as _load

    return _load(uri, device)


def __getattr__(name: str):
    """`tunelog.TunelogCallback` imports transformers only when a script asks for it."""
    if name == "TunelogCallback":
        from .integrations.callback import TunelogCallback

        return TunelogCallback
    raise AttributeError(f"module 'tunelog' has no attribute {name!r}")


__all__ = [
    "MachineError",
    "TunelogCallback",
    "Schedule",
    "Spec",
    "SpecError",
    "Tracker",
    "TunelogError",
    "load_model",
    "load_spec",
    "schedule_names",
    "tracking_uri",
]
