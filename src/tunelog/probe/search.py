"""The probe's search: which candidates to run, which to skip and why, the runoff of the fastest,
and what it records (a child run per candidate, the summary, the plot, the ready-to-run script).

Candidates that cannot fit are skipped before they run: anything at least as large in every
memory knob as one that ran out, and anything the measured peaks (a line in batch size per
group) predict over budget. Knobs that do not change memory (gradient accumulation) are tried
only on the three fastest configs that fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Optional

import torch

from .. import tracking as t
from ..errors import SpecError
from ..spec import ProbeSpec, Spec, rules, space
from ..spec.plan import make_plan
from ..tracking import Tracker
from ..trainers.registry import capabilities, load
from ..training.facts import model_hidden_size
from ..training.model import pick_device
from ..vocabulary import Outcome
from . import record
from .measure import (
    ACCUM,
    BATCH,
    DECLINE,
    DEFAULT_PARAMS,
    FALLING_IN_A_ROW,
    MEMORY_KNOBS,
    QUICK_CANDIDATES,
    TIE,
    Measurement,
    Measurer,
    ProbeResult,
    at_least_as_large,
    grid,
    group_key,
    memory_rank,
    values_of,
)


class Probe:
    def __init__(
        self,
        spec: Spec,
        tracker: Tracker,
        max_memory_gb: Optional[float] = None,
        quick: bool = False,
        refine: bool = False,
        echo: Callable[[str], None] = print,
        exhaustive: bool = False,
        effective_batch: Optional[int] = None,
    ):
        self.spec, self.tracker, self.quick, self.refine, self.echo = spec, tracker, quick, refine, echo
        self.exhaustive = exhaustive  # every candidate, no skipping: the slow baseline the search is judged against
        self.cfg = spec.probe or ProbeSpec()  # the spec's probe section, its defaults when absent
        self.knobs = {**MEMORY_KNOBS, **{name: 1 for name in self.cfg.memory_knobs}}
        self.params = self.cfg.params or DEFAULT_PARAMS
        self.trainer = capabilities(spec.trainer.type)
        if not self.trainer.in_process and not self.cfg.params:
            self.params = {BATCH: DEFAULT_PARAMS[BATCH]}  # the script's own knobs are the user's to name
        # holding the effective batch: accumulation follows from the batch size, so the pick trains the same
        # optimisation as the user's config (only its speed and memory differ)
        self.effective = effective_batch or self.cfg.keep_effective_batch
        if self.effective:
            self.params = {k: v for k, v in self.params.items() if k != ACCUM}
        fields = spec.flat_params()
        unknown = [
            (f"probe.params.{n}", "not a spec field (e.g. train.batch_size, lora.r, model.gradient_checkpointing)")
            for n in self.params
            if n not in fields
        ]
        unknown += [
            ("probe.memory_knobs", f"{n!r} is not a spec field (e.g. trainer.args.network_dim)")
            for n in self.cfg.memory_knobs
            if n not in fields
        ]
        if unknown:
            raise SpecError(spec.source, unknown)
        self.headroom = self.cfg.headroom
        self.hidden = model_hidden_size(spec)
        self.device = pick_device()
        if max_memory_gb is None and self.device.type == "cuda":
            max_memory_gb = torch.cuda.get_device_properties(self.device).total_memory / 1e9
        self.budget = max_memory_gb
        self.limit = max_memory_gb * (1 - self.headroom) if max_memory_gb else None
        measurer = load(self.trainer.probe_measurer)  # the in-process loop, or the user's script
        self.measurer: Measurer = measurer(spec, self.cfg, self.budget, self.device)

    def measure(self, values: dict[str, Any]) -> Measurement:
        return self.measurer.measure(values)

    # --- choosing what to run -----------------------------------------------------------

    def skip_reason(self, values: dict[str, Any], done: list[Measurement]) -> str:
        for m in done:
            if m.outcome == Outcome.OOM and at_least_as_large(values, m.values, self.knobs):
                return f"at least as large in every memory knob as {m.values}, which ran out of memory"
        predicted = self.predict_peak(values, done)
        if predicted is not None and self.limit is not None and predicted > self.limit:
            return (
                f"predicted peak {predicted:.3f} GB (a line through this group's measured peaks) is over "
                f"{self.limit:.3f} GB (budget {self.budget:g} GB less {self.headroom:.0%} headroom)"
            )
        return ""

    def predict_peak(self, values: dict[str, Any], done: list[Measurement]) -> Optional[float]:
        same = [
            m
            for m in done
            if m.outcome == Outcome.OK and group_key(m.values, self.knobs) == group_key(values, self.knobs)
        ]
        if len(same) < 3:  # a line through two points is too weak a reason to skip a candidate
            return None
        xs = [float(m.values[BATCH]) for m in same]
        ys = [m.peak_gb for m in same]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
        return my + slope * (float(values[BATCH]) - mx)

    def plan(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The memory-knob groups in ascending memory, and the knobs that do not touch memory."""
        memory_params = {k: v for k, v in self.params.items() if k in self.knobs}
        free = [k for k in self.params if k not in self.knobs]
        if BATCH not in memory_params:
            raise SpecError(self.spec.source, [("probe.params", "must include train.batch_size")])
        return grid(memory_params), free

    n_samples: Optional[int] = None

    def run(self) -> ProbeResult:
        tags = {t.TAG_KIND: t.KIND_PROBE, t.TAG_NAME: f"probe-{self.spec.tracking.experiment}"}
        with self.tracker.run(self.spec.tracking.experiment, run_name=tags[t.TAG_NAME], tags=tags) as run:
            result = ProbeResult(run_id=run.run_id, grid_size=len(grid(self.params)), accum=self.spec.train.grad_accum)
            self.n_samples = self.measurer.prepare()
            self._search(result, run.run_id)
            record.report(run, result, self.budget, self.measurer)
        return result

    def complete(self, knobs: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """A candidate as the spec would train it: its knobs plus the derived params they imply (spec fields
        only), and the rule that forbids it ('' when none does)."""
        derived = (
            space.derive(self.spec.search, knobs, self.spec.source, self.spec.flat_params(), skip_unknown=True)
            if self.spec.search
            else {}
        )
        values = {**knobs, **space.spec_overrides(derived)}
        spec = self.spec.with_overrides(values, "probe candidate")
        env = {**rules.rule_env(rules.Facts(spec, make_plan(spec, self.n_samples or 1), self.hidden)), **values}
        helpers = {n for n in (self.spec.search.params if self.spec.search else {}) if "." not in n}
        for name in helpers - set(knobs):  # a sweep helper the probe does not set: rules naming it are kept
            env.pop(name, None)
        verdict = rules.judge(spec, env, 0, rules.config_key(values), probe=True)
        return values, (f"{verdict.rule}: {verdict.reason}" if verdict.rejected else "")

    def _try(self, knobs: dict[str, Any], result: ProbeResult, parent: str) -> Optional[Measurement]:
        if self.effective:
            if self.effective % knobs[BATCH]:
                m = Measurement(
                    knobs, "skipped", f"batch {knobs[BATCH]} does not divide the effective batch {self.effective}"
                )
                if m.values not in [s.values for s in result.skipped]:
                    result.skipped.append(m)
                return m
            knobs = {**knobs, ACCUM: self.effective // knobs[BATCH]}
        values, forbidden = self.complete(knobs)
        known = [m for m in result.measured + result.skipped + result.rejected if m.values == values]
        if known:
            return known[0]
        if forbidden:  # costs no training and can never be the pick
            m = Measurement(values, Outcome.REJECTED, forbidden)
            result.rejected.append(m)
            self.echo(f"rule {values}: rejected by {forbidden}")
            return m
        why = "" if self.exhaustive else self.skip_reason(values, result.measured)
        if why:
            result.skipped.append(Measurement(values, "skipped", why))
            self.echo(f"skip {values}: {why}")
            return None
        m = self.measure(values)
        m.run_id = record.log_candidate(self.tracker, self.spec.tracking.experiment, m, parent)
        result.measured.append(m)
        self.echo(
            f"{m.outcome:<4} {values}: {m.samples_per_s:.1f} samples/s, peak {m.peak_gb:.3f} GB"
            + (f" ({m.reason})" if m.reason else "")
        )
        return m

    def _search(self, result: ProbeResult, parent: str) -> None:
        if self.exhaustive:
            for values in grid(self.params):
                self._try(values, result, parent)
            result.best = self._best(result)
            return
        candidates, free = self.plan()
        defaults = {k: self.spec.flat_params()[k] for k in free}
        groups: dict[tuple, list[dict]] = {}
        for c in candidates:
            groups.setdefault(group_key(c, self.knobs), []).append(c)
        ordered = sorted(
            groups.values(),
            key=lambda g: [memory_rank(k, v, self.knobs) for k, v in sorted(g[0].items()) if k != BATCH],
        )
        budget_left = QUICK_CANDIDATES if self.quick else None
        best_batch: Optional[int] = None
        for i, group in enumerate(ordered):
            group = sorted(group, key=lambda c: c[BATCH])
            if i > 0 and best_batch is not None:  # other groups: only around the first group's best batch
                batches = sorted({c[BATCH] for c in group})
                at = min(range(len(batches)), key=lambda j: abs(batches[j] - best_batch))
                group = [c for c in group if c[BATCH] in batches[max(0, at - 1) : at + 2]]
            best_here: Optional[Measurement] = None
            falling = 0  # measurements in a row clearly below the group's best so far
            for values in group:
                if budget_left is not None and budget_left <= 0:
                    break
                m = self._try({**values, **defaults}, result, parent)
                if m is None or m.outcome != Outcome.OK:
                    if m is not None and m.outcome != Outcome.REJECTED and budget_left is not None:
                        budget_left -= 1
                    if m is None or m.outcome == Outcome.OOM:
                        break  # larger batches of this group need more memory still
                    continue
                if budget_left is not None:
                    budget_left -= 1
                # one slow point is noise on a shared machine (the larger tiny model lost its pick to it: the
                # walk stopped at 64 while 161 was 1.16x faster); two in a row below the best is a trend
                falling = falling + 1 if best_here and m.samples_per_s < best_here.samples_per_s * DECLINE else 0
                if falling >= FALLING_IN_A_ROW:
                    break
                best_here = m if best_here is None or m.samples_per_s > best_here.samples_per_s else best_here
            if i == 0 and best_here is not None:
                best_here = self._past_the_grid(best_here, group, defaults, result, parent)
                best_batch = best_here.values[BATCH]
        result.best = self._best(result)
        if result.best is not None and free:
            # accumulation and other knobs that leave memory alone still move throughput (fewer optimizer
            # steps per sample): try them on the three fastest configs that fit
            for top in self._top(result, 3):
                for values in grid({k: self.params[k] for k in free}):
                    self._try({**top.values, **values}, result, parent)
            result.best = self._best(result)
        if self.refine and result.best is not None:
            for values in self._neighbours(result.best.values):
                self._try(values, result, parent)
        self._runoff(result, rounds=3 if self.refine else 2)

    def _past_the_grid(
        self, best: Measurement, group: list[dict], defaults: dict, result: ProbeResult, parent: str
    ) -> Measurement:
        """When the next batch in the grid above the largest that fit did not fit (out of memory, or predicted
        over), the largest batch that fits lies between them: bisect there, as a max-batch finder would. Every
        batch that fits is kept as a measurement (the runoff takes the largest); the faster one is returned.
        A few measurements, off the user's grid."""
        same = {k: v for k, v in best.values.items() if k in self.params and k != BATCH}
        fitting = [
            m
            for m in result.measured
            if m.outcome == Outcome.OK
            and {k: m.values.get(k) for k in same} == same
            and isinstance(m.values[BATCH], int)
        ]
        if self.effective or not fitting:
            return best
        low = max(m.values[BATCH] for m in fitting)
        larger = [b for b in sorted(c[BATCH] for c in group) if b > low]
        missed = {  # batches known not to fit: out of memory, or skipped as predicted over the budget
            m.values[BATCH]
            for m in result.measured + result.skipped
            if m.outcome != Outcome.OK and {k: m.values.get(k) for k in same} == same
        }
        if not larger or larger[0] not in missed:  # the walk stopped on a falling trend, not on memory
            return best
        high = larger[0]
        for _ in range(4):
            mid = (low + high) // 2
            if mid - low < max(1, low // 16):  # closer than a sixteenth: not worth a measurement
                break
            m = self._try({**same, **defaults, BATCH: mid}, result, parent)
            if m is not None and m.outcome == Outcome.OK:
                low = mid
                best = m if m.samples_per_s > best.samples_per_s else best
            else:
                high = mid
        return best

    def _neighbours(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        """`--refine`: the configs one step away from `values` in one knob (the next value up or down)."""
        out = []
        for name, param in self.params.items():
            choices = values_of(param)
            if values.get(name) not in choices:
                continue
            at = choices.index(values[name])
            out += [{**values, name: choices[j]} for j in (at - 1, at + 1) if 0 <= j < len(choices)]
        return out

    def _runoff(self, result: ProbeResult, rounds: int) -> None:
        """The three fastest and the largest batch that fits, measured again back to back (`rounds` times,
        interleaved); the pick is the fastest, each finalist scored by its best round.

        Candidates are measured minutes apart, and a shared machine's speed drifts by 10-20% over
        minutes: the first measurements rank configs from different moments. Measured within a few
        seconds of each other, the finalists compare on the same footing. Two rounds, not one, and the
        best of them, as `timeit` takes the fastest repeat: other work on the machine only ever slows a
        step (the same config measured four times here ran 1036 to 1614 samples/s), so a config's best
        round is the nearest to its own speed, and one measurement each let that noise choose."""
        top = self._top(result, 3)
        largest = self._largest_batch(result, top[0]) if top else None
        if largest is not None and largest not in top:  # what a max-batch finder would pick runs off too
            top.append(largest)
        if len(top) < 2:
            result.best = top[0] if top else None
            return
        fresh: dict[int, list[float]] = {i: [] for i in range(len(top))}
        for r in range(rounds):
            for i, m in enumerate(top):
                again = self.measure(m.values)
                if again.outcome == Outcome.OK:
                    fresh[i].append(again.samples_per_s)
                # a line per measurement: a runoff of four finalists in two rounds is a minute on a slow model
                said = f"{again.samples_per_s:.1f} samples/s" if again.outcome == Outcome.OK else again.outcome
                self.echo(f"runoff {r + 1}/{rounds} {m.values}: {said}")
        scores = {i: max(v) for i, v in fresh.items() if v}
        winner = _winner(top, scores)
        result.runoff = [{"config": m.values, "samples_per_s": scores.get(i)} for i, m in enumerate(top)]
        result.best = _scored(top[winner], scores.get(winner))
        self.echo("runoff: " + ", ".join(f"{m.values} {scores.get(i, 0.0):.1f} samples/s" for i, m in enumerate(top)))

    def _largest_batch(self, result: ProbeResult, best: Measurement) -> Optional[Measurement]:
        """The largest batch that fits among configs like `best` in every other knob: throughput usually grows
        with the batch until memory runs out, so it is the finalist a noisy first measurement most often
        wrongs."""
        same = [
            m
            for m in self._top(result, len(result.measured))
            if {k: v for k, v in m.values.items() if k != BATCH} == {k: v for k, v in best.values.items() if k != BATCH}
        ]
        return max(same, key=lambda m: m.values[BATCH]) if same else None

    def _top(self, result: ProbeResult, k: int) -> list[Measurement]:
        """The k fastest measured candidates that fit the budget less headroom."""
        fits = [
            m for m in result.measured if m.outcome == Outcome.OK and (self.limit is None or m.peak_gb <= self.limit)
        ]
        return sorted(fits, key=lambda m: -m.samples_per_s)[:k]

    def _best(self, result: ProbeResult) -> Optional[Measurement]:
        top = self._top(result, 1)
        return top[0] if top else None


def _scored(m: Measurement, score: Optional[float]) -> Measurement:
    """The pick with the figure it was chosen by (its runoff score, its ETA at that speed): the best line must
    not say another number than the runoff just did."""
    if not score or not m.samples_per_s:
        return m
    eta = m.eta_s * m.samples_per_s / score if m.eta_s is not None else None
    return replace(m, samples_per_s=score, tokens_per_s=m.tokens_per_s * score / m.samples_per_s, eta_s=eta)


def _winner(top: list[Measurement], scores: dict[int, float]) -> int:
    """The runoff's pick: the fastest, except that finalists within `TIE` of it are one speed, and of those the
    largest batch wins (what a max-batch finder would pick, at no cost in speed: more samples a step)."""
    if not scores:
        return 0
    fastest = max(scores.values())
    tied = [i for i, v in scores.items() if v >= fastest * (1 - TIE)]
    return max(tied, key=lambda i: (_batch(top[i]), scores[i]))


def _batch(m: Measurement) -> float:
    batch = m.values.get(BATCH)
    return batch if isinstance(batch, (int, float)) else 0
