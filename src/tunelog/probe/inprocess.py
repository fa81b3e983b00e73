"""The built-in trainer's candidates, measured in this process on one loaded base model: each gets a
fresh LoRA adapter, a few warm-up steps on the worst-case batch, then steps until the estimate settles;
a peak over the budget (or CUDA running out) is an `oom` outcome, never a crash."""

from __future__ import annotations

import itertools
import json
import shlex
import time
from typing import Any, Optional

import torch

from ..spec import ProbeSpec, Spec
from ..training import memory
from ..training.data import TokenizedData, read_texts, tokenize
from ..training.model import add_lora, check_machine, load_base_model, load_tokenizer
from ..training.step import TrainingStep
from ..vocabulary import Outcome
from .measure import Measurement, _enough, eta_seconds, step_time


class InProcess:
    """The built-in trainer's candidates, measured in this process on one loaded base model."""

    def __init__(self, spec: Spec, cfg: ProbeSpec, budget: Optional[float], device: torch.device):
        self.spec, self.cfg, self.budget, self.device = spec, cfg, budget, device
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
            top = max(records, key=lambda r: float(r.get(field_name, 0)))
            longest = top.get(self.spec.data.text_field, top.get("messages"))
            data = tokenize([longest], self.tokenizer, max_length)
        else:
            data = tokenize(texts, self.tokenizer, max_length)
            data.samples = [max(data.samples, key=len)]
        return data, len(texts)

    def measure(self, values: dict[str, Any]) -> Measurement:
        spec, base, budget = self.spec.with_overrides(values, "probe candidate"), self.base, self.budget
        data, _ = self.worst_case(spec.data.max_length)
        batch = {k: v.to(self.device) for k, v in data.collate([0] * spec.train.batch_size).items()}
        tokens = int(batch["attention_mask"].sum())
        model = stepper = None
        memory.release(self.device)  # the last candidate's (or the model load's) freed memory goes back first
        memory.reset_peak(self.device)
        try:
            if spec.model.gradient_checkpointing:
                base.gradient_checkpointing_enable()
            torch.manual_seed(0)
            model = add_lora(spec, base)
            model.train()
            stepper = TrainingStep(spec, model, self.device)  # the trainer's own step: optimizer, precision, EMA
            times: list[float] = []
            for step in itertools.count():
                start = time.perf_counter()
                stepper.step([batch] * spec.train.grad_accum, spec.train.learning_rate)
                if step >= self.cfg.warmup_steps:
                    times.append(time.perf_counter() - start)
                peak = memory.peak_gb(self.device)
                if budget is not None and peak > budget:
                    return Measurement(
                        values,
                        Outcome.OOM,
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
                Outcome.OK,
                "",
                sps,
                tokens * spec.train.grad_accum / per_step,
                memory.peak_gb(self.device),
                eta_seconds(spec, sps, self.n_samples),
                len(times),
            )
        except (torch.OutOfMemoryError, MemoryError) as exc:
            return Measurement(values, Outcome.OOM, str(exc).splitlines()[0][:200], peak_gb=memory.peak_gb(self.device))
        finally:
            if stepper is not None:
                stepper.release()
            del stepper
            if model is not None:
                model.unload()  # the base model comes back without LoRA layers, ready for the next candidate
            if spec.model.gradient_checkpointing:
                base.gradient_checkpointing_disable()

    def command(self, best: Measurement) -> str:
        """`tunelog train` with the winner's settings, every value shell-quoted."""
        sets = " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in sorted(best.values.items()))
        return f"tunelog train {shlex.quote(self.spec.source)} {sets}\n"
