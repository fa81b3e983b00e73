"""`sweep`: an Optuna study over the spec's search space; every trial a child MLflow run.

The one package that talks to Optuna: `study` (storage, creation, resume), `loop` (one
worker's ask/tell loop and `--workers`), `analysis` (reading a study back).
"""

from .analysis import SweepSummary, best_trial_overrides, best_trials, counts, pareto_front, suggested_ranges
from .loop import Sweep, SweepOptions
from .study import default_storage, load_for_analysis, open_storage, used_budget

__all__ = [
    "Sweep",
    "SweepOptions",
    "SweepSummary",
    "best_trial_overrides",
    "best_trials",
    "counts",
    "default_storage",
    "load_for_analysis",
    "open_storage",
    "pareto_front",
    "suggested_ranges",
    "used_budget",
]
