"""PNG pictures for runs: loss curves and LR schedules.

Built on matplotlib's object API (no pyplot global state), so plotting is safe in
worker threads and never opens a window.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from ..spec.schedules import Schedule
from ..vocabulary import Outcome


def loss_curve(
    steps: Sequence[int],
    losses: Sequence[float],
    eval_steps: Sequence[int] = (),
    eval_losses: Sequence[float] = (),
    title: str = "loss",
) -> Figure:
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


def throughput_memory(measured: list[dict], batch_key: str, budget_gb: float | None) -> Figure:
    """Samples/s and peak memory against batch size, one line per group of the other knobs; OOMs marked."""
    fig = Figure(figsize=(10, 4), dpi=100)
    speed, mem = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    groups: dict[str, list[dict]] = {}
    for m in measured:
        label = ", ".join(f"{k}={v}" for k, v in sorted(m["values"].items()) if k != batch_key) or "all"
        groups.setdefault(label, []).append(m)
    for label, rows in sorted(groups.items()):
        ok = sorted((r for r in rows if r["outcome"] == Outcome.OK), key=lambda r: r["values"][batch_key])
        xs = [r["values"][batch_key] for r in ok]
        speed.plot(xs, [r["samples_per_s"] for r in ok], "o-", label=label)
        mem.plot(xs, [r["peak_gb"] for r in ok], "o-", label=label)
        oom = [r for r in rows if r["outcome"] == Outcome.OOM]
        mem.plot([r["values"][batch_key] for r in oom], [r["peak_gb"] for r in oom], "x", color="red", markersize=9)
    if budget_gb:
        mem.axhline(budget_gb, color="red", linestyle="--", linewidth=1, label=f"budget {budget_gb:g} GB")
    for ax, ylabel in ((speed, "samples/s"), (mem, "peak memory (GB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(batch_key)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    speed.legend(fontsize=7)
    mem.legend(fontsize=7)
    speed.set_title("throughput (worst-case batch)")
    mem.set_title("peak memory (x: out of memory)")
    fig.tight_layout()
    return fig
