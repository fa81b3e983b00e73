"""The built-in trainer: causal-LM fine-tuning with LoRA on peft + transformers + torch.

One plain loop, top to bottom: gradient accumulation, clipping, mixed precision
where the device supports it, EMA of the adapter, the LR from `schedules`, eval at
intervals, and divergence detection. Every optimizer step logs `train/*` and
`perf/*` metrics through the run (buffered, so logging costs the loop nothing).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .. import tracking as t
from ..spec import Spec
from ..spec.plan import make_plan
from ..spec.schedules import Schedule
from ..tracking import PLOTS_ARTIFACT, RunLogger
from ..training import memory, plots
from ..training.adapters import adapter_resolver
from ..training.data import TokenizedData, read_texts, tokenize
from ..training.model import LoadedModel, base_reference, load_for_training
from ..training.progress import Progress
from ..training.step import TrainingStep
from ..util import answers
from ..vocabulary import Outcome
from . import EvalHook, Result


@dataclass
class History:
    """What the plots and the Result need; the full series live in MLflow."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    step_samples: list[int] = field(default_factory=list)


def endless_batches(data: TokenizedData, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Shuffled batches, epoch after epoch, from a generator of its own (reproducible per seed)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from data.batches(batch_size, generator)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TokenizedData, batch_size: int, device: torch.device, autocast) -> float:
    """Token-weighted mean loss over the whole eval set."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for indices in data.batches(batch_size, None):
        batch = {k: v.to(device) for k, v in data.collate(indices).items()}
        with autocast():
            loss = model(**batch).loss
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


class HFTrainer:
    """The built-in LoRA trainer (registered as `hf`)."""

    def train(self, spec: Spec, run: RunLogger, on_eval: EvalHook | None = None) -> Result:
        torch.manual_seed(spec.train.seed)  # LoRA init and dropout draw from this
        loaded = load_for_training(spec, resolve=adapter_resolver(spec))
        train_data = tokenize(read_texts(spec, spec.data.train, "data.train"), loaded.tokenizer, spec.data.max_length)
        eval_data = None
        if spec.data.eval:
            eval_data = tokenize(read_texts(spec, spec.data.eval, "data.eval"), loaded.tokenizer, spec.data.max_length)
        extra = {
            name: tokenize(read_texts(spec, path, f"data.extra_eval.{name}"), loaded.tokenizer, spec.data.max_length)
            for name, path in spec.data.extra_eval.items()
        }
        schedule = make_plan(spec, len(train_data)).schedule
        steps = schedule.total_steps
        run.log_figure(plots.lr_schedule(schedule), f"{PLOTS_ARTIFACT}/lr_schedule.png")
        run.log_params(
            {
                "data.n_train": len(train_data),
                "data.n_eval": len(eval_data) if eval_data else 0,
                "train.total_steps": steps,
                "train.warmup_steps_resolved": schedule.warmup_steps,
                "train.peak_lr_resolved": schedule.peak_lr,
                "train.device": loaded.device.type,
            }
        )
        run.set_tags({t.TAG_GPUS: "1" if loaded.device.type == "cuda" else "0"})  # one device per run
        loop = _Loop(spec, loaded, train_data, eval_data, schedule, run, on_eval)
        loop.extra_eval = extra
        try:
            return loop.run()
        except (torch.OutOfMemoryError, MemoryError) as exc:
            return loop.out_of_memory(exc)


class _Loop:
    """One training run's state; `run()` reads top to bottom."""

    def __init__(
        self,
        spec: Spec,
        loaded: LoadedModel,
        train_data: TokenizedData,
        eval_data: TokenizedData | None,
        schedule: Schedule,
        run: RunLogger,
        on_eval: EvalHook | None = None,
    ):
        self.spec, self.loaded, self.run_log, self.on_eval = spec, loaded, run, on_eval
        self.train_data, self.eval_data, self.schedule = train_data, eval_data, schedule
        self.model, self.device = loaded.model, loaded.device
        self.stepper = TrainingStep(spec, self.model, self.device)  # the probe measures this very step
        self.autocast, self.ema = self.stepper.autocast, self.stepper.ema
        self.history = History()
        self.extra_eval: dict[str, TokenizedData] = {}
        self.extra_results: dict[str, float] = {}
        self.bar: Progress | None = None  # the run's progress, once it runs

    def run(self) -> Result:
        t = self.spec.train
        batches = endless_batches(self.train_data, t.batch_size, t.seed)
        memory.reset_peak(self.device)
        self.model.train()
        first_loss: float | None = None
        outcome, reason = Outcome.OK, ""
        prompts = self.spec.data.sample_prompts
        self.bar = bar = Progress(self.schedule.total_steps)
        if prompts:
            bar.note(f"answering {len(prompts)} sample prompts before training")
        before = answers.generate(self.model, self.loaded.tokenizer, prompts, self.device) if prompts else []
        for step in range(1, self.schedule.total_steps + 1):
            loss, grad_norm, samples, tokens, seconds = self._optimizer_step(step, batches)
            first_loss = loss if first_loss is None else first_loss
            self._log_step(step, loss, grad_norm, samples, tokens, seconds)
            bar.update(step, loss, self.schedule.lr_at(step))
            reason = self._divergence(loss, first_loss)
            if reason:
                outcome = Outcome.DIVERGED
                break
            if (
                self.eval_data is not None
                and t.eval_every
                and step % t.eval_every == 0
                and step < self.schedule.total_steps
            ):
                if self._eval(step):
                    outcome, reason = Outcome.PRUNED, f"stopped at step {step} by the sweep's pruner"
                    break
        if outcome == Outcome.OK and self.eval_data is not None:
            self._eval(step)
        if outcome == Outcome.OK:
            self._eval_extra(step)
        if outcome == Outcome.OK and prompts:
            bar.note(f"answering {len(prompts)} sample prompts after training")
            with self.ema.applied() if self.ema else contextlib.nullcontext():  # the weights the adapter keeps
                after = answers.generate(self.model, self.loaded.tokenizer, prompts, self.device)
            self.run_log.log_text(answers.markdown(prompts, before, after, step), answers.ARTIFACT)
        bar.close()
        return self._finish(outcome, reason, step)

    def _optimizer_step(self, step: int, batches: Iterator[list[int]]) -> tuple[float, float, int, int, float]:
        """Accumulate `grad_accum` micro-batches, clip, step; returns loss, grad norm, samples, tokens, seconds."""
        start = time.perf_counter()
        micro = (
            {k: v.to(self.device, non_blocking=True) for k, v in self.train_data.collate(next(batches)).items()}
            for _ in range(self.spec.train.grad_accum)
        )
        s = self.stepper.step(micro, self.schedule.lr_at(step))
        return s.loss, s.grad_norm, s.samples, s.tokens, time.perf_counter() - start

    def _log_step(self, step: int, loss: float, grad_norm: float, samples: int, tokens: int, seconds: float) -> None:
        self.history.steps.append(step)
        self.history.losses.append(loss)
        self.history.step_seconds.append(seconds)
        self.history.step_samples.append(samples)
        self.run_log.log_metrics(
            {
                "train/loss": loss,
                "train/lr": self.schedule.lr_at(step),
                "train/grad_norm": grad_norm,
                "perf/samples_per_s": samples / seconds,
                "perf/tokens_per_s": tokens / seconds,
                "perf/peak_mem_gb": memory.peak_gb(self.device),
            },
            step=step,
        )

    def _divergence(self, loss: float, first_loss: float) -> str:
        """Why training should stop, or '' to go on: NaN/inf, or loss far above where it started."""
        if not math.isfinite(loss):
            return f"loss is {loss} at step {len(self.history.steps)}"
        limit = self.spec.train.divergence_factor * first_loss
        if loss > limit and len(self.history.steps) > 1:
            return (
                f"loss {loss:.4g} at step {len(self.history.steps)} is above "
                f"{self.spec.train.divergence_factor}x the first step's {first_loss:.4g}"
            )
        return ""

    def _eval(self, step: int) -> bool:
        """Evaluate and log; True when the eval hook asks to stop."""
        assert self.eval_data is not None
        if self.bar is not None:
            self.bar.note(f"evaluating at step {step} on {len(self.eval_data)} held-out samples")
        with self.ema.applied() if self.ema else contextlib.nullcontext():
            loss = evaluate(self.model, self.eval_data, self.spec.train.batch_size, self.device, self.autocast)
        self.history.eval_steps.append(step)
        self.history.eval_losses.append(loss)
        self.run_log.log_metrics({"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 50.0))}, step=step)
        return bool(self.on_eval and self.on_eval(step, loss))

    def _eval_extra(self, step: int) -> None:
        """The spec's other held-out sets (earlier stages' data, say), once at the end."""
        with self.ema.applied() if self.ema else contextlib.nullcontext():
            for name, data in self.extra_eval.items():
                loss = evaluate(self.model, data, self.spec.train.batch_size, self.device, self.autocast)
                self.extra_results[f"eval/{name}/loss"] = loss
                self.run_log.log_metrics({f"eval/{name}/loss": loss}, step=step)

    def out_of_memory(self, exc: BaseException) -> Result:
        """Release what the failed step held, and end with outcome `oom` instead of a crash."""
        self.stepper.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        reason = f"out of memory at step {len(self.history.steps) + 1}: {str(exc).splitlines()[0][:200]}"
        return Result(
            outcome=Outcome.OOM,
            reason=reason,
            steps=len(self.history.steps),
            metrics={"perf/peak_mem_gb": memory.peak_gb(self.device)},
        )

    def _throughput(self) -> float:
        """Samples/s over the run, leaving out the first steps (allocator and kernel warm-up)."""
        skip = min(3, len(self.history.step_seconds) // 4)
        secs = sum(self.history.step_seconds[skip:])
        return sum(self.history.step_samples[skip:]) / secs if secs else 0.0

    def _finish(self, outcome: str, reason: str, step: int) -> Result:
        h = self.history
        final = {
            "train/final_loss": h.losses[-1],
            "perf/mean_samples_per_s": self._throughput(),
            "perf/peak_mem_gb": memory.peak_gb(self.device),
            "train/steps": float(step),
        }
        final.update(self.extra_results)
        if h.eval_losses:
            final["eval/loss"] = h.eval_losses[-1]
            final["eval/perplexity"] = math.exp(min(h.eval_losses[-1], 50.0))
        logged_already = {"eval/loss", "eval/perplexity", *self.extra_results}
        self.run_log.log_metrics({k: v for k, v in final.items() if k not in logged_already}, step=step)
        self.run_log.log_figure(
            plots.loss_curve(h.steps, h.losses, h.eval_steps, h.eval_losses), f"{PLOTS_ARTIFACT}/loss.png"
        )
        if outcome in (Outcome.OK, Outcome.PRUNED):
            self._save_adapter(step)
        return Result(outcome=outcome, reason=reason, steps=step, metrics=final)

    def _save_adapter(self, step: int) -> None:
        """The adapter (EMA weights where kept) as the run's MLflow model, or as the plain `adapter/` folder
        on merged stages, whose foundation no folder holds (`RunLogger.log_adapter`)."""
        base = base_reference(self.spec, self.loaded.tokenizer)
        with self.ema.applied() if self.ema else contextlib.nullcontext():
            self.run_log.log_adapter(self.model, self.loaded.tokenizer, base, step)
