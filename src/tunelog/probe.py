"""`probe`: the fastest training config that fits in memory, measured on a worst-case batch.

The model loads once; each candidate gets a fresh LoRA adapter on it, a few warm-up steps,
then steps until the throughput estimate settles. A candidate that runs out of memory
(CUDA OOM, or on the CPU a peak above --max-memory-gb) is recorded and the probe goes on.
Candidates that cannot fit are skipped before they run: anything at least as large in
every memory knob as one that ran out, and anything the measured peaks (a line in batch
size per group) predict over budget. Knobs that do not change memory (gradient
accumulation) are tried only on the three fastest configs that fit.

How a candidate is measured is a `Measurer`: `InProcess` here (the built-in trainer's model,
loaded once) or `probe_command.CommandMeasurer` (the user's own script, run per candidate).
The search, the skipping and the records are the same for both.
"""

from __future__ import annotations

import itertools
import json
import math
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Protocol

import torch

from . import memory
from . import tracking as t
from .data import TokenizedData, read_texts, tokenize
from .errors import SpecError
from .model import add_lora, check_machine, load_base_model, load_tokenizer, pick_device
from .spec import ParamSpec, ProbeSpec, Spec
from .tracking import Tracker

BATCH = "train.batch_size"
# memory grows with these (True before False for gradient checkpointing: it saves memory)
MEMORY_KNOBS = {BATCH: 1, "lora.r": 1, "data.max_length": 1, "model.gradient_checkpointing": -1}
DEFAULT_PARAMS = {
    BATCH: ParamSpec(type="categorical", choices=[1, 2, 4, 8, 16, 32, 64]),
    "lora.r": ParamSpec(type="categorical", choices=[8, 16, 32]),
}
QUICK_CANDIDATES = 6
DECLINE = 0.9  # a group's batch walk stops once throughput falls below this share of its best


@dataclass
class Measurement:
    values: dict[str, Any]
    outcome: str  # ok, oom, failed (crashed, diverged, gave nothing to time), skipped
    reason: str = ""
    samples_per_s: float = 0.0
    tokens_per_s: float = 0.0
    peak_gb: float = 0.0
    eta_s: Optional[float] = None
    steps: int = 0
    run_id: Optional[str] = None


@dataclass
class ProbeResult:
    run_id: str
    measured: list[Measurement] = field(default_factory=list)
    skipped: list[Measurement] = field(default_factory=list)
    best: Optional[Measurement] = None
    grid_size: int = 0
    script: str = ""
    runoff: list[dict[str, Any]] = field(default_factory=list)  # the finalists measured again, side by side

    def summary(self) -> dict[str, Any]:
        ok = [m for m in self.measured if m.outcome == "ok"]
        return {
            "grid": self.grid_size,
            "tested": len(self.measured),
            "successful": len(ok),
            "measured": [
                {
                    "config": m.values,
                    "outcome": m.outcome,
                    "samples_per_s": m.samples_per_s,
                    "peak_mem_gb": m.peak_gb,
                    "reason": m.reason,
                }
                for m in self.measured
            ],
            "failed_oom": [m.values for m in self.measured if m.outcome == "oom"],
            "failed": [{"config": m.values, "why": m.reason} for m in self.measured if m.outcome == "failed"],
            "skipped": [{"config": m.values, "why": m.reason} for m in self.skipped],
            "best": None
            if self.best is None
            else {
                "config": self.best.values,
                "samples_per_s": self.best.samples_per_s,
                "tokens_per_s": self.best.tokens_per_s,
                "peak_mem_gb": self.best.peak_gb,
                "eta_s": self.best.eta_s,
            },
            "runoff": self.runoff,
        }


def values_of(p: ParamSpec) -> list[Any]:
    """A knob's values to try: categorical choices, or every step of an int/float range."""
    if p.type == "categorical":
        return list(p.choices or [])
    step = p.step or 1
    n = int(math.floor((p.max - p.min) / step + 1e-9)) + 1  # type: ignore[operator]
    vals = [p.min + i * step for i in range(n)]  # type: ignore[operator]
    return [int(v) for v in vals] if p.type == "int" else vals


def grid(params: dict[str, ParamSpec]) -> list[dict[str, Any]]:
    names = sorted(params)
    return [dict(zip(names, combo)) for combo in itertools.product(*(values_of(params[n]) for n in names))]


def memory_rank(name: str, value: Any, knobs: dict[str, int] = MEMORY_KNOBS) -> float:
    """A knob's value on a scale where larger means more memory."""
    direction = knobs.get(name, 0)
    return float(value) * direction if direction else 0.0


def at_least_as_large(a: dict[str, Any], b: dict[str, Any], knobs: dict[str, int] = MEMORY_KNOBS) -> bool:
    """True when `a` needs at least the memory of `b` in every memory knob they share."""
    return all(memory_rank(k, a[k], knobs) >= memory_rank(k, b[k], knobs) for k in a if k in knobs and k in b)


def group_key(values: dict[str, Any], knobs: dict[str, int] = MEMORY_KNOBS) -> tuple:
    """The memory knobs but the batch size: candidates that differ only in batch size share a group."""
    return tuple(sorted((k, v) for k, v in values.items() if k != BATCH and k in knobs))


class Measurer(Protocol):
    """Measures one candidate; `prepare` runs once per probe (loads what can be shared)."""

    def prepare(self) -> Optional[int]:
        """Sets up once; returns the training set's size (for the ETA) where known."""

    def measure(self, values: dict[str, Any]) -> Measurement: ...

    def command(self, best: Measurement) -> str:
        """A ready-to-run shell command that trains with the winner's settings."""


def eta_seconds(spec: Spec, samples_per_s: float, n_samples: Optional[int]) -> Optional[float]:
    """The full training's time at this throughput: max_steps x samples per step, else dataset x epochs."""
    per_step = spec.train.batch_size * spec.train.grad_accum
    if spec.train.max_steps:
        return spec.train.max_steps * per_step / samples_per_s
    if n_samples is None:
        return None
    return n_samples * (spec.train.epochs or 1.0) / samples_per_s


class InProcess:
    """The built-in trainer's candidates, measured in this process on one loaded base model."""

    def __init__(self, probe: "Probe"):
        self.probe, self.spec, self.cfg, self.device = probe, probe.spec, probe.cfg, probe.device
        self._worst: dict[int, tuple[TokenizedData, int]] = {}
        self.base = self.tokenizer = None
        self.n_samples: Optional[int] = None

    def prepare(self) -> Optional[int]:
        check_machine(self.spec, self.device)
        self.tokenizer = load_tokenizer(self.spec)
        self.base = load_base_model(self.spec, self.tokenizer, self.device)
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.n_samples = self.worst_case(self.spec.data.max_length)[1]
        return self.n_samples

    def worst_case(self, max_length: int) -> tuple[TokenizedData, int]:
        """The longest sample(s) by tokens (or by `probe.length_field`), and the training set's size.

        Computed once per max_length: every candidate of a probe trains on the same batch.
        """
        if max_length not in self._worst:
            self._worst[max_length] = self._find_worst(max_length)
        return self._worst[max_length]

    def _find_worst(self, max_length: int) -> tuple[TokenizedData, int]:
        texts = read_texts(self.spec, self.spec.data.train, "data.train")
        field_name = self.cfg.length_field
        if field_name:
            lines = self.spec.path(self.spec.data.train).read_text().splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
            longest = max(records, key=lambda r: float(r.get(field_name, 0)))[self.spec.data.text_field]
            data = tokenize([longest], self.tokenizer, max_length)
        else:
            data = tokenize(texts, self.tokenizer, max_length)
            data.samples = [max(data.samples, key=len)]
        return data, len(texts)

    def measure(self, values: dict[str, Any]) -> Measurement:
        spec, base, budget = self.spec.with_overrides(values, "probe candidate"), self.base, self.probe.budget
        data, _ = self.worst_case(spec.data.max_length)
        batch = {k: v.to(self.device) for k, v in data.collate([0] * spec.train.batch_size).items()}
        tokens = int(batch["attention_mask"].sum())
        model = optimizer = None
        memory.release(self.device)  # the last candidate's (or the model load's) freed memory goes back first
        memory.reset_peak(self.device)
        try:
            if spec.model.gradient_checkpointing:
                base.gradient_checkpointing_enable()
            torch.manual_seed(0)
            model = add_lora(spec, base)
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=spec.train.learning_rate)
            times: list[float] = []
            for step in itertools.count():
                start = time.perf_counter()
                for _ in range(spec.train.grad_accum):
                    (model(**batch).loss / spec.train.grad_accum).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                if step >= self.cfg.warmup_steps:
                    times.append(time.perf_counter() - start)
                peak = memory.peak_gb(self.device)
                if budget is not None and peak > budget:
                    return Measurement(
                        values,
                        "oom",
                        f"peak {peak:.3f} GB above the {budget:g} GB budget",
                        peak_gb=peak,
                        steps=step + 1,
                    )
                if _enough(times, self.cfg):
                    break
            per_step = step_time(times)
            sps = spec.train.batch_size * spec.train.grad_accum / per_step
            return Measurement(
                values,
                "ok",
                "",
                sps,
                tokens * spec.train.grad_accum / per_step,
                memory.peak_gb(self.device),
                eta_seconds(spec, sps, self.n_samples),
                len(times),
            )
        except (torch.OutOfMemoryError, MemoryError) as exc:
            return Measurement(values, "oom", str(exc).splitlines()[0][:200], peak_gb=memory.peak_gb(self.device))
        finally:
            del optimizer
            if model is not None:
                model.unload()  # the base model comes back without LoRA layers, ready for the next candidate
            if spec.model.gradient_checkpointing:
                base.gradient_checkpointing_disable()

    def command(self, best: Measurement) -> str:
        """`tunelog train` with the winner's settings, every value shell-quoted."""
        sets = " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in sorted(best.values.items()))
        return f"tunelog train {shlex.quote(self.spec.source)} {sets}\n"


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
    ):
        self.spec, self.tracker, self.quick, self.refine, self.echo = spec, tracker, quick, refine, echo
        self.exhaustive = exhaustive  # every candidate, no skipping: the slow baseline the search is judged against
        self.cfg = spec.probe or ProbeSpec()  # the spec's probe section, its defaults when absent
        self.knobs = {**MEMORY_KNOBS, **{name: 1 for name in self.cfg.memory_knobs}}
        self.params = self.cfg.params or DEFAULT_PARAMS
        if spec.trainer.type == "command" and not self.cfg.params:
            self.params = {BATCH: DEFAULT_PARAMS[BATCH]}  # the script's own knobs are the user's to name
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
        self.device = pick_device()
        if max_memory_gb is None and self.device.type == "cuda":
            max_memory_gb = torch.cuda.get_device_properties(self.device).total_memory / 1e9
        self.budget = max_memory_gb
        self.limit = max_memory_gb * (1 - self.headroom) if max_memory_gb else None
        if spec.trainer.type == "command":
            from .probe_command import CommandMeasurer

            self.measurer: Measurer = CommandMeasurer(self)
        else:
            self.measurer = InProcess(self)

    def measure(self, values: dict[str, Any]) -> Measurement:
        return self.measurer.measure(values)

    # --- choosing what to run -----------------------------------------------------------

    def skip_reason(self, values: dict[str, Any], done: list[Measurement]) -> str:
        for m in done:
            if m.outcome == "oom" and at_least_as_large(values, m.values, self.knobs):
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
            m for m in done if m.outcome == "ok" and group_key(m.values, self.knobs) == group_key(values, self.knobs)
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

    def run(self) -> ProbeResult:
        tags = {t.TAG_KIND: t.KIND_PROBE, t.TAG_NAME: f"probe-{self.spec.tracking.experiment}"}
        with self.tracker.run(self.spec.tracking.experiment, run_name=tags[t.TAG_NAME], tags=tags) as run:
            result = ProbeResult(run_id=run.run_id, grid_size=len(grid(self.params)))
            self.measurer.prepare()
            self._search(result, run.run_id)
            self._report(run, result)
        return result

    def _try(self, values: dict[str, Any], result: ProbeResult, parent: str) -> Optional[Measurement]:
        known = [m for m in result.measured + result.skipped if m.values == values]
        if known:
            return known[0]
        why = "" if self.exhaustive else self.skip_reason(values, result.measured)
        if why:
            result.skipped.append(Measurement(values, "skipped", why))
            self.echo(f"skip {values}: {why}")
            return None
        m = self.measure(values)
        m.run_id = self._log_candidate(m, parent)
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
            for values in group:
                if budget_left is not None and budget_left <= 0:
                    break
                m = self._try({**values, **defaults}, result, parent)
                if m is None or m.outcome != "ok":
                    if m is not None and budget_left is not None:
                        budget_left -= 1
                    if m is None or m.outcome == "oom":
                        break  # larger batches of this group need more memory still
                    continue
                if budget_left is not None:
                    budget_left -= 1
                if best_here and m.samples_per_s < best_here.samples_per_s * DECLINE:
                    break  # throughput is clearly falling with the batch (a plateau is not enough: noise)
                best_here = m if best_here is None or m.samples_per_s > best_here.samples_per_s else best_here
            if i == 0 and best_here is not None:
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
        self._runoff(result, rounds=2 if self.refine else 1)

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
        """The three fastest, measured again back to back (`rounds` times, interleaved); the pick is theirs.

        Candidates are measured minutes apart, and a shared machine's speed drifts by 10-20% over
        minutes: the first measurements rank configs from different moments. Measured within a few
        seconds of each other, the finalists compare on the same footing."""
        top = self._top(result, 3)
        if len(top) < 2:
            result.best = top[0] if top else None
            return
        fresh: dict[int, list[float]] = {i: [] for i in range(len(top))}
        for _ in range(rounds):
            for i, m in enumerate(top):
                again = self.measure(m.values)
                if again.outcome == "ok":
                    fresh[i].append(again.samples_per_s)
        scores = {i: sum(v) / len(v) for i, v in fresh.items() if v}
        winner = max(scores, key=scores.get) if scores else 0
        result.runoff = [{"config": m.values, "samples_per_s": scores.get(i)} for i, m in enumerate(top)]
        result.best = top[winner]
        self.echo("runoff: " + ", ".join(f"{m.values} {scores.get(i, 0.0):.1f} samples/s" for i, m in enumerate(top)))

    def _top(self, result: ProbeResult, k: int) -> list[Measurement]:
        """The k fastest measured candidates that fit the budget less headroom."""
        fits = [m for m in result.measured if m.outcome == "ok" and (self.limit is None or m.peak_gb <= self.limit)]
        return sorted(fits, key=lambda m: -m.samples_per_s)[:k]

    def _best(self, result: ProbeResult) -> Optional[Measurement]:
        top = self._top(result, 1)
        return top[0] if top else None

    # --- recording -----------------------------------------------------------------------

    def _log_candidate(self, m: Measurement, parent: str) -> str:
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
        return self.tracker.create_finished_run(
            self.spec.tracking.experiment,
            tags[t.TAG_NAME],
            now,
            now,
            "FINISHED",
            m.values,
            {**tags, t.TAG_PARENT: parent},
            metrics,
        )

    def _report(self, run: t.RunLogger, result: ProbeResult) -> None:
        from . import plots

        summary = result.summary()
        run.log_text(json.dumps(summary, indent=2, default=str), "probe_summary.json")
        run.log_figure(
            plots.throughput_memory([asdict(m) for m in result.measured], BATCH, self.budget),
            f"{t.PLOTS_ARTIFACT}/throughput_memory.png",
        )
        if result.best is not None:
            result.script = (
                "#!/usr/bin/env bash\n# the fastest config that fit, found by tunelog probe\n"
                + self.measurer.command(result.best)
            )
            run.log_text(result.script, "train_best.sh")
            run.log_metrics(
                {"probe/best_samples_per_s": result.best.samples_per_s, "probe/best_peak_mem_gb": result.best.peak_gb}
            )
        run.log_metrics(
            {
                "probe/tested": len(result.measured),
                "probe/skipped": len(result.skipped),
                "probe/oom": sum(1 for m in result.measured if m.outcome == "oom"),
            }
        )


def step_time(times: list[float]) -> float:
    """The lower quartile of the measured step times.

    Interference (another process, a page fault, the OS) only ever makes a step slower, so the
    faster steps are the config's own speed; the lower quartile keeps that and still ignores a
    single lucky step. On a shared 2-core machine the median moved 5-15% between two
    measurements of one config, too much to rank configs a few percent apart.
    """
    ordered = sorted(times)
    return ordered[(len(ordered) - 1) // 4]


def _enough(times: list[float], cfg: ProbeSpec) -> bool:
    """Stop once the estimate has settled (or the step cap is hit), after at least `min_seconds` measured;
    a step slower than `min_seconds` on its own ends the measurement at the cap."""
    n = len(times)
    if n >= 5 * cfg.max_steps:
        return True
    if sum(times) < cfg.min_seconds:
        return False
    if n >= cfg.max_steps:
        return True
    return n >= 6 and abs(step_time(times) - step_time(times[:-3])) <= cfg.stable_within * step_time(times[:-3])
