"""The words every part of tunelog judges with, defined once: how a run ended (`Outcome`) and which
way a metric is better (`Direction`). A leaf module: the spec, the judge, the store and the verbs all
import it, and it imports nothing of theirs.

Both are `str` enums, so the values in the store stay the plain strings they always were
(`tunelog.outcome=ok`, `tunelog.direction=minimize`) and compare equal to them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from enum import Enum
from functools import lru_cache
from typing import Optional, TypeVar


class Outcome(str, Enum):
    """How a run (or a sweep trial) ended; the tag `tunelog.outcome`."""

    OK = "ok"
    OOM = "oom"
    DIVERGED = "diverged"
    REJECTED = "rejected"  # a sweep config a hard rule refused: never trained
    FAILED = "failed"
    PRUNED = "pruned"
    INCOMPLETE = "incomplete"
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM or a dead worker: a sweep trial that runs again on resume
    OVER_BUDGET = "over_budget"  # a trial asked after the budget was taken by other workers: no run

    def __str__(self) -> str:  # f-strings and tags print the value, as the plain strings did
        return self.value

    __hash__ = str.__hash__  # a dict keyed by "oom" finds Outcome.OOM (Enum hashes the member's name)


# severity when several hints disagree (an import merging readers): the worst wins
SEVERITY = {Outcome.OOM: 4, Outcome.DIVERGED: 3, Outcome.FAILED: 2, Outcome.INCOMPLETE: 1}

T = TypeVar("T")
_MAXIMIZED = re.compile(r"(?i)score|acc|f1|bleu|rouge|auc|clip|psnr|ssim|precision|recall|map\b|reward|win")
_MINIMIZED = re.compile(r"(?i)loss|err|wer|cer|per\b|per_|ppl|perplex|fid|mse|mae|rmse|lpips")


class Direction(str, Enum):
    """Which way a metric is better; the tag `tunelog.direction` and Optuna's direction word."""

    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    def __str__(self) -> str:
        return self.value

    __hash__ = str.__hash__

    @classmethod
    def of(cls, word: Optional[str]) -> "Direction":
        """A stored or typed word (`min`/`max` too; None: minimize, the default of every loss)."""
        return cls.MAXIMIZE if word in ("max", "maximize", cls.MAXIMIZE) else cls.MINIMIZE

    @classmethod
    def guess(cls, metric: str) -> "Direction":
        """From a metric's name where nothing recorded says: lower for losses and error rates, higher for
        scores and accuracies; else lower."""
        if _MINIMIZED.search(metric):
            return cls.MINIMIZE
        return cls.MAXIMIZE if _MAXIMIZED.search(metric) else cls.MINIMIZE

    @staticmethod
    def names_a_result(name: str) -> bool:
        """The name reads like a result (a loss, an error rate, a score), so its way is known."""
        return bool(_MAXIMIZED.search(name) or _MINIMIZED.search(name))

    @property
    def sign(self) -> int:
        """+1 where a larger number is better, -1 where a smaller one is."""
        return 1 if self is Direction.MAXIMIZE else -1

    def describe(self) -> str:
        return "higher is better" if self is Direction.MAXIMIZE else "lower is better"

    def gain(self, before: float, after: float) -> float:
        """Improvement from `before` to `after` in the metric's own sense (> 0 is better)."""
        return self.sign * (after - before)

    def better(self, a: float, b: float) -> bool:
        """True when `a` is strictly better than `b`; a NaN is never better, and anything beats a NaN."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self is Direction.MAXIMIZE else a < b

    def score(self, value: float) -> float:
        """The value oriented so lower is better (a maximized metric negated)."""
        return -value if self is Direction.MAXIMIZE else value

    def best(self, items: Iterable[T], value: Callable[[T], Optional[float]]) -> Optional[T]:
        """The item whose `value(item)` is best, finite values only; on a tie the first one given
        (callers pass items oldest first: the earliest run that reached a value is the best)."""
        best, best_value = None, math.nan
        for item in items:
            v = value(item)
            if v is None or not math.isfinite(v):
                continue
            if best is None or self.better(v, best_value):
                best, best_value = item, v
        return best

    def sort_key(self, value: Optional[float]) -> float:
        """A key that sorts best first, missing and NaN values last."""
        if value is None or math.isnan(value):
            return math.inf
        return self.score(value)


def metric_key(name: str) -> str:
    """One spelling per metric: `eval/loss`, `eval_loss`, `eval.loss` and `Eval-Loss` are one metric (transformers
    logs `eval_loss`, tunelog `eval/loss`). Every reader that matches a metric by name matches these keys."""
    return re.sub(r"[/.\- ]+", "_", name.strip()).lower()


def spelled_as(name: str, logged: Iterable[str]) -> str:
    """`name` as the runs spell it: itself where logged, else the logged name of the same metric, else itself."""
    logged = list(logged)
    if name in logged:
        return name
    key = metric_key(name)
    return next((k for k in logged if metric_key(k) == key), name)


# params that name a run or where it wrote, never a setting: recorded, never read as a change
_IDENTITY = re.compile(
    r"(?i)(?:^|[._/])(?:output_dir|logging_dir|log_dir|save_dir|dirpath|default_root_dir|run_name|run_id|"
    r"experiment_name|exp_name|hub_model_id|hub_token|hub_strategy|hub_private_repo|push_to_hub\w*|"
    r"tracking_uri|trackio_\w+|project|resume_from_checkpoint|datetime_\w+|number)$"
)


@lru_cache(maxsize=65536)
def names_a_place(key: str) -> bool:
    """Whether a param names the run or a place it wrote (`output_dir`, `run_name`): the one list, for
    MLflow runs other tools logged and for imported folders alike. Cached: a Trainer run logs some 200
    params, the same names in every run."""
    return bool(_IDENTITY.search(key))
