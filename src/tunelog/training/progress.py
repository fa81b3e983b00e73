"""Progress of a run in progress: a bar on a terminal, a line every 10 s elsewhere.

Why both: tqdm draws nothing where stderr is no terminal (`mlflow run`, a sweep's console piped to a file,
CI), and a trial of minutes then says nothing at all. Off a terminal a line says the step, the loss and the
time left, at most every `EVERY_S` seconds, so no stretch of training is silent longer than that.
"""

from __future__ import annotations

import sys
import time
from typing import Optional

from tqdm.auto import tqdm

EVERY_S = 10.0


class Progress:
    def __init__(self, total: int, desc: str = "train"):
        self.total, self.desc = total, desc
        self.bar = tqdm(total=total, desc=desc, unit="step", disable=None)  # None: drawn on a terminal only
        self.start = self.shown = time.monotonic()

    def update(self, step: int, loss: Optional[float] = None, lr: Optional[float] = None) -> None:
        """After each optimizer step."""
        if not self.bar.disable:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}" if loss is not None else "-", lr=f"{lr:.2e}" if lr else "-")
            return
        now = time.monotonic()
        if now - self.shown < EVERY_S and step < self.total:
            return
        self.shown = now
        left = (now - self.start) / step * (self.total - step) if step else 0.0
        said = f", loss {loss:.4g}" if loss is not None else ""
        print(f"  {self.desc}: step {step}/{self.total}{said}, {left:.0f} s left", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """A line for a stretch that is not an optimizer step (an evaluation, the samples), said as it
        starts, so the console is not silent through it."""
        if not self.bar.disable:
            self.bar.set_description_str(f"{self.desc} ({text})")
            return
        self.shown = time.monotonic()
        print(f"  {self.desc}: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()
