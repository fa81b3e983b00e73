"""PNG pictures for runs: loss curves and LR schedules.

Built on matplotlib's object API (no pyplot global state), so plotting is safe in
worker threads and never opens a window.
"""
from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

from .schedules import Schedule


def loss_curve(steps: Sequence[int], losses: Sequence[float], eval_steps: Sequence[int] = (),
               eval_losses: Sequence[float] = (), title: str = "loss") -> Figure:
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot(steps, losses, label="train/loss", linewidth=1)
    if eval_steps:
        ax.plot(eval_steps, eval_losses, "o-", label="eval/loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def lr_schedule(schedule: Schedule, title: str | None = None) -> Figure:
    """The whole schedule with its milestones marked, as lint and the trainer see it."""
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    n = schedule.total_steps
    stride = max(1, n // 4000)  # a 900k-step schedule needs no 900k points to draw
    xs = list(range(1, n + 1, stride)) + ([n] if (n - 1) % stride else [])
    ax.plot(xs, [schedule.lr_at(s) for s in xs], linewidth=1.5)
    for m in schedule.milestones():
        ax.axvline(m, color="grey", alpha=0.2, linewidth=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(title or f"{schedule.name}: peak {schedule.peak_lr:.3g} over {n} steps")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
