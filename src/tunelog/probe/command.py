"""Probing a command trainer: the user's script run once per candidate, briefly.

Each candidate runs the rendered argv with `train.max_steps` set to warm-up + measured steps
(the argv should pass `{train.max_steps}` to the script, or `probe.extra_argv` can add the
flag) and `probe.extra_argv` appended. Throughput comes from a metric the script prints
(`probe.throughput_metric`, samples/s) or else from when its step lines arrive (warm-up
steps excluded); peak memory from a printed metric (`probe.memory_metric`, GB) or else the
process tree's sampled peak (RSS, or GPU memory by PID where `nvidia-smi` is present). Over
the budget, or "out of memory" in its output, and the candidate is oom.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any, Optional

from ..errors import TunelogError
from ..spec import ProbeSpec, Spec
from ..trainers.command import render_argv, run_command, script_cwd
from ..training.data import count_samples
from ..vocabulary import Outcome
from .measure import Measurement, eta_seconds, step_time


class CommandMeasurer:
    def __init__(self, spec: Spec, cfg: ProbeSpec, budget: Optional[float], device: object = None):
        """`device` is the probe's own pick, unused: the script chooses its device itself."""
        self.spec, self.cfg, self.budget = spec, cfg, budget
        self.n_samples: Optional[int] = None

    def prepare(self) -> Optional[int]:
        """The training set's size for the ETA, where the spec names a data file tunelog can read."""
        if self.spec.data.train:
            try:
                self.n_samples = count_samples(self.spec, self.spec.data.train, "data.train")
            except TunelogError:  # images, or a format only the script understands: no ETA from tunelog
                self.n_samples = None
        return self.n_samples

    def measure(self, values: dict[str, Any]) -> Measurement:
        steps = self.cfg.warmup_steps + self.cfg.max_steps
        spec = self.spec.with_overrides({**values, "train.max_steps": steps}, "probe candidate")
        output_dir = Path(tempfile.mkdtemp(prefix="tunelog-probe-"))
        timing = _StepTimes(self.cfg.throughput_metric, self.cfg.memory_metric)
        try:
            argv = render_argv(spec, output_dir, [*spec.trainer.argv, *self.cfg.extra_argv])
            ran = run_command(spec, argv, output_dir, timing.seen, memory_budget_gb=self.budget)
        finally:
            shutil.rmtree(output_dir, ignore_errors=True)
        peak = timing.memory_gb if timing.memory_gb is not None else ran.peak_gb
        budget = self.budget
        if ran.outcome == Outcome.OOM or (budget is not None and peak > budget):
            reason = (
                ran.reason
                if ran.outcome == Outcome.OOM
                else f"printed peak {peak:.3f} GB above the {budget:g} GB budget"
            )
            return Measurement(values, Outcome.OOM, reason, peak_gb=peak, steps=ran.steps)
        if ran.outcome != Outcome.OK:
            return Measurement(values, Outcome.FAILED, f"{ran.outcome}: {ran.reason}", peak_gb=peak, steps=ran.steps)
        per_sample = spec.train.batch_size * spec.train.grad_accum
        sps = timing.samples_per_s(self.cfg.warmup_steps, per_sample)
        if sps is None:
            return Measurement(
                values,
                Outcome.FAILED,
                "nothing to time: the script printed fewer than two step lines "
                "after warm-up; print steps or set probe.throughput_metric",
                peak_gb=peak,
                steps=ran.steps,
            )
        return Measurement(
            values,
            Outcome.OK,
            "",
            sps,
            0.0,
            peak,
            eta_seconds(self.spec.with_overrides(values, "probe candidate"), sps, self.n_samples),
            ran.steps,
        )

    def command(self, best: Measurement) -> str:
        """The user's own command with the winner's settings (no probe step cap), every item shell-quoted."""
        spec = self.spec.with_overrides(best.values, "probe best")
        output_dir = Path.cwd() / "probe-best-output"
        argv = " ".join(shlex.quote(item) for item in render_argv(spec, output_dir))
        return f"cd {shlex.quote(str(script_cwd(spec)))} && {argv}\n"


class _StepTimes:
    """When each new step's line arrived, and the throughput or memory the script printed."""

    def __init__(self, throughput_metric: Optional[str], memory_metric: Optional[str]):
        self.throughput_metric, self.memory_metric = throughput_metric, memory_metric
        self.arrivals: list[tuple[int, float]] = []
        self.rates: list[tuple[int, float]] = []
        self.memory_gb: Optional[float] = None

    def seen(self, step: Optional[int], metrics: dict[str, float], **_: object) -> None:
        now = time.perf_counter()
        if step is not None and (not self.arrivals or step > self.arrivals[-1][0]):
            self.arrivals.append((step, now))
        if self.throughput_metric in metrics and step is not None:
            self.rates.append((step, metrics[self.throughput_metric]))
        if self.memory_metric in metrics:
            self.memory_gb = max(self.memory_gb or 0.0, metrics[self.memory_metric])

    def samples_per_s(self, warmup: int, samples_per_step: int) -> Optional[float]:
        """The printed rate's median after warm-up, else samples per step over the (lower-quartile) step time."""
        printed = [rate for step, rate in self.rates if step > warmup]
        if printed:
            return median(printed)
        timed = [(s, t) for s, t in self.arrivals if s >= warmup]
        per_step = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(timed, timed[1:])]
        if not per_step:
            return None
        return samples_per_step / step_time(per_step)
