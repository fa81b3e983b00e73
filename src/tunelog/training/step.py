"""One training step, shared by the built-in trainer and the probe.

What the probe measures (time and peak memory) must be what `train` runs: the spec's optimizer
(AdamW, 8-bit AdamW, SGD), its precision (bf16/fp16 autocast, the fp16 grad scaler), clipping
and the adapter's EMA. Both build a `TrainingStep` from the spec and call `step()`; neither has a
loop of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from ..spec import Spec


def build_optimizer(spec: Spec, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    t = spec.train
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay, eps=t.adam_eps)
    if t.optimizer == "adamw8bit":
        import bitsandbytes as bnb  # steps on CPU tensors too (bitsandbytes >= 0.45)

        return bnb.optim.AdamW8bit(params, lr=t.learning_rate, weight_decay=t.weight_decay, eps=t.adam_eps)
    return torch.optim.SGD(params, lr=t.learning_rate, momentum=t.momentum, weight_decay=t.weight_decay)


def autocast_for(spec: Spec, device: torch.device):
    """Mixed precision where the device supports it (model.check_machine has refused what it can't)."""
    precision = spec.train.precision
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


class AdapterEMA:
    """Exponential moving average of the trainable (adapter) weights; swapped in for eval and saving."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)


@dataclass
class StepStats:
    loss: float  # the mean over the micro-batches
    grad_norm: float
    samples: int
    tokens: int


class TrainingStep:
    """The optimizer, precision, clipping and EMA of one training run, and its optimizer step."""

    def __init__(self, spec: Spec, model: torch.nn.Module, device: torch.device):
        self.spec, self.model, self.device = spec, model, device
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(spec, self.params)
        self.autocast = autocast_for(spec, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=spec.train.precision == "fp16")
        self.ema = AdapterEMA(self.params, spec.train.ema_decay) if spec.train.ema_decay else None
        self.max_norm = spec.train.max_grad_norm or float("inf")

    def step(self, micro_batches: Iterable[dict[str, torch.Tensor]], lr: float) -> StepStats:
        """Forward, loss, backward over the micro-batches (gradient accumulation), unscale, clip, optimizer
        (and scaler) step, zero_grad, EMA update. Batches are on the device already."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = list(micro_batches)
        loss_sum, samples, tokens = 0.0, 0, 0
        for batch in batches:
            with self.autocast():
                loss = self.model(**batch).loss / len(batches)
            self.scaler.scale(loss).backward()
            loss_sum += loss.item()
            samples += int(batch["input_ids"].shape[0])
            tokens += int(batch["attention_mask"].sum())
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.max_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema:
            self.ema.update()
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # the step's time is its kernels' time, not their launch
        return StepStats(loss_sum, grad_norm, samples, tokens)

    def release(self) -> None:
        """Drop the optimizer state and the EMA copy (the probe measures the next candidate next)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()
        self.ema = None
