"""tunelog: LoRA fine-tuning experiments recorded on MLflow, reproducible and comparable."""
from .errors import MachineError, SpecError, TunelogError
from .schedules import Schedule, schedule_names
from .spec import Spec, load_spec
from .tracking import Tracker, tracking_uri

__all__ = ["MachineError", "Schedule", "Spec", "SpecError", "Tracker", "TunelogError", "load_spec",
           "schedule_names", "tracking_uri"]
