"""TunelogCallback's per-step cost: the same Hugging Face Trainer (examples/hf_trainer/train.py's model and
data, logging every step) with `report_to="none"` and no callback, then with TunelogCallback writing the run.

Each step's time is the wall time between consecutive `on_step_begin` events (so every callback's work on
that step, and the buffered writer's flushes, are inside it), summed after 10 warm-up steps; runs
alternate, five of each, and the fastest of each is compared (a shared 2-core machine's noise only ever
adds time, and it is larger than the effect). Target: `hf_callback_overhead` (with / without) at most 1.02.
"""

from __future__ import annotations

import sys
import time

from _common import REPO, sized, temp_store, verdict

STEPS = sized(300, 20)
WARMUP = sized(10, 4)
REPEATS = sized(5, 1)


def one_run(with_callback: bool, out: str) -> float:
    """Seconds of steps WARMUP.. of one training."""
    from train import DEMO, Lines, build
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from tunelog import TunelogCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.starts: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.starts.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            self.starts.append(time.perf_counter())

    tokenizer, model = build(8)
    args = TrainingArguments(
        output_dir=out,
        max_steps=STEPS,
        per_device_train_batch_size=8,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    clock = Clock()
    callbacks = [clock, TunelogCallback()] if with_callback else [clock]
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Lines(DEMO / "data/general/train.txt", tokenizer),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.train()
    return clock.starts[-1] - clock.starts[WARMUP]


def main() -> None:
    import tempfile

    sys.path.insert(0, str(REPO / "examples" / "hf_trainer"))
    temp_store()
    out = tempfile.mkdtemp(prefix="tunelog-hfcb-")
    plain, tracked = [], []
    for _ in range(REPEATS):
        plain.append(one_run(False, out))
        tracked.append(one_run(True, out))
    a, b = min(plain), min(tracked)
    n = STEPS - WARMUP
    print(f"{n} steps: {a:.3f} s without the callback, {b:.3f} s with it ({(b - a) / n * 1000:+.2f} ms a step)")
    print(verdict("hf_callback_overhead", b / a, "<=", 1.02))


if __name__ == "__main__":
    main()
