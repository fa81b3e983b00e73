"""Sweep efficiency: how many trials tunelog's sampler needs to get within 1% of the best, over
how many random search needs (median over seeds), on a fixed, cheap objective with constraints;
and what a rejected trial costs, end to end, on a real MLflow store (SQLite) and the default Optuna journal storage.

The objective stands in for training (a bowl over a LoRA-like space: log LR, rank, alpha ratio,
warmup) so that hundreds of trials take seconds; the trials go through the sweep's own code
(`suggest`, `search.judge`, named constraints, rejected trials told PRUNED). Targets: trial
ratio <= 0.5; rejected trial < 50 ms.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

from _common import REPO, sized, temp_store, verdict

SEEDS = range(sized(9, 1))
CAP = sized(600, 30)  # trials; a run that never gets within 1% counts as CAP
SEARCH = {
    "study": "bench",
    "n_trials": CAP,
    "params": {
        "train.learning_rate": {"type": "float", "min": 1e-5, "max": 1e-2, "log": True},
        "lora.r": {"type": "categorical", "choices": [4, 8, 16, 32]},
        "alpha_ratio": {"type": "float", "min": 0.25, "max": 4.0},
        "train.warmup_ratio": {"type": "float", "min": 0.0, "max": 0.3},
    },
    "constraints": [
        {"name": "big-rank-high-lr", "reject": "lora.r >= 16 and train.learning_rate > 1e-3", "reason": "overshoots"},
        {
            "name": "high-alpha-warmup",
            "if": "alpha_ratio >= 3",
            "require": ["train.warmup_ratio >= 0.15"],
            "reason": "needs warmup",
        },
    ],
}
FLOOR = 10.0  # the objective's minimum; within 1% means below 10.1


def objective(p: dict) -> float:
    """A smooth bowl with its feasible minimum at lr 5e-4, r 8, alpha ratio 2, warmup 0.1."""
    return (
        FLOOR
        + (math.log10(p["train.learning_rate"]) + 3.3) ** 2
        + 0.3 * (math.log2(p["lora.r"]) - 3) ** 2
        + 0.15 * (p["alpha_ratio"] - 2.0) ** 2
        + 4.0 * (p["train.warmup_ratio"] - 0.1) ** 2
    )


def load_bench_spec(sampler: str, seed: int):
    import yaml

    from tunelog.spec import load_spec

    raw = yaml.safe_load((REPO / "examples/demo/demo.yaml").read_text())
    raw["search"] = {**SEARCH, "sampler": sampler, "seed": seed}
    for section in ("configs", "pipeline", "probe"):  # its stages' data is not copied, and not needed
        raw.pop(section, None)
    folder = Path(tempfile.mkdtemp())
    for key in ("train", "eval"):
        raw["data"][key] = str(REPO / "examples/demo" / raw["data"][key])
    raw["model"]["tokenizer"] = str(REPO / "examples/demo/tokenizer.json")
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw))
    return load_spec(folder / "spec.yaml")


def trials_to_reach(sampler: str, seed: int) -> int:
    """Trials (rejected ones included) until a feasible value within 1% of the minimum."""
    import optuna
    from optuna.trial import TrialState

    from tunelog.spec import rules, space
    from tunelog.sweep.study import make_sampler, suggest

    spec = load_bench_spec(sampler, seed)
    study = optuna.create_study(sampler=make_sampler(spec.search, CAP), direction="minimize")
    for n in range(1, CAP + 1):
        trial = study.ask()
        values = {**(sampled := suggest(trial, spec.search)), **space.derive(spec.search, sampled, spec.source)}
        judged = rules.judge(spec, values, seed, rules.config_key(values))
        for rule, broken in judged.broken.items():
            trial.set_constraint(rule, broken)
        if judged.rejected:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        value = objective(values)
        study.tell(trial, value)
        if value <= FLOOR * 1.01:
            return n
    return CAP


def rejected_trial_ms(store: str) -> float:
    """Mean wall time of Sweep.run_trial for configs every rule rejects: sample, judge, Optuna, MLflow."""
    from tunelog.sweep import Sweep, SweepOptions
    from tunelog.tracking import Tracker

    spec = load_bench_spec("tpe", 0)
    always = spec.search.constraints + [
        spec.search.constraints[0].model_copy(update={"name": "reject-all", "reject": "train.learning_rate > 0"})
    ]
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"constraints": always})})
    sweep = Sweep(spec, Tracker(), SweepOptions(echo=lambda s: None, study="bench-reject"))
    study = sweep.study()
    with Tracker().run("bench-sweep", run_name="parent") as parent:
        sweep.run_trial(study, study.ask(), parent.run_id)  # warm-up: imports, tables, caches
        times = []
        for _ in range(sized(40, 5)):
            start = time.perf_counter()
            outcome, _ = sweep.run_trial(study, study.ask(), parent.run_id)
            times.append((time.perf_counter() - start) * 1000)
            assert outcome == "rejected"
    return statistics.mean(times)


def main() -> None:
    store = temp_store()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tpe = [trials_to_reach("tpe", s) for s in SEEDS]
    rnd = [trials_to_reach("random", s) for s in SEEDS]
    ms = rejected_trial_ms(store)
    print(f"trials to within 1% of the minimum (cap {CAP}), seeds {list(SEEDS)}")
    print(f"  tunelog (TPE, constraints): {tpe} median {statistics.median(tpe)}")
    print(f"  random search:              {rnd} median {statistics.median(rnd)}")
    print(f"rejected trial, end to end (Optuna journal storage + MLflow SQLite child run): {ms:.1f} ms")
    print(verdict("rejected_trial_ms", ms, "<=", 50))
    print(verdict("sweep_trials_ratio", statistics.median(tpe) / statistics.median(rnd), "<=", 0.5))


if __name__ == "__main__":
    main()
