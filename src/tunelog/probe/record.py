"""What a probe records: a finished child run per candidate, and on the probe's run the summary, the
throughput-memory plot, the ready-to-run `train_best.sh` and the counts."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Optional

from .. import tracking as t
from ..tracking import Tracker
from ..vocabulary import Outcome
from .measure import BATCH, Measurement, Measurer, ProbeResult


def log_candidate(tracker: Tracker, experiment: str, m: Measurement, parent: str) -> str:
    """One measured candidate as a closed child run of the probe: its values, outcome and figures."""
    tags = {
        t.TAG_KIND: t.KIND_PROBE,
        t.TAG_NAME: " ".join(f"{k}={v}" for k, v in m.values.items()),
        t.TAG_OUTCOME: m.outcome,
        t.TAG_REASON: m.reason,
    }
    now = int(time.time() * 1000)
    metrics = [
        ("perf/samples_per_s", m.samples_per_s, now, 0),
        ("perf/tokens_per_s", m.tokens_per_s, now, 0),
        ("perf/peak_mem_gb", m.peak_gb, now, 0),
    ]
    if m.eta_s is not None:
        metrics.append(("perf/eta_s", m.eta_s, now, 0))
    return tracker.create_finished_run(
        experiment, tags[t.TAG_NAME], now, now, "FINISHED", m.values, {**tags, t.TAG_PARENT: parent}, metrics
    )


def report(run: t.RunLogger, result: ProbeResult, budget: Optional[float], measurer: Measurer) -> None:
    """The probe run's summary, plot, script and counts."""
    from ..training import plots

    summary = result.summary()
    run.log_text(json.dumps(summary, indent=2, default=str), "probe_summary.json")
    run.log_figure(
        plots.throughput_memory([asdict(m) for m in result.measured], BATCH, budget),
        f"{t.PLOTS_ARTIFACT}/throughput_memory.png",
    )
    if result.best is not None:
        result.script = (
            "#!/usr/bin/env bash\n# the fastest config that fit, found by tunelog probe\n"
            + measurer.command(result.best)
        )
        run.log_text(result.script, "train_best.sh")
        run.log_metrics(
            {"probe/best_samples_per_s": result.best.samples_per_s, "probe/best_peak_mem_gb": result.best.peak_gb}
        )
    run.log_metrics(
        {
            "probe/tested": len(result.measured),
            "probe/skipped": len(result.skipped),
            "probe/rejected": len(result.rejected),
            "probe/oom": sum(1 for m in result.measured if m.outcome == Outcome.OOM),
        }
    )
