"""Tracking overhead: mean step time with tunelog's tracking (every step logged to a SQLite
MLflow store) over the same training loop with a logger that drops everything.

Both arms run the built-in trainer's own step (`_Loop._optimizer_step` + `_log_step`) on the
demo model, interleaved in blocks so machine noise hits both alike. Target: ratio <= 1.02.
"""

from __future__ import annotations

import statistics
import time

from _common import demo_spec, sized, temp_store, verdict

BLOCKS, STEPS_PER_BLOCK = sized((12, 15), (2, 3))


class DroppingLogger:
    """The 'no tracking' arm: same calls, nothing recorded."""

    def log_metrics(self, metrics, step=None) -> None:
        pass


def main() -> None:
    temp_store()
    import torch

    from tunelog.spec.plan import make_plan
    from tunelog.tracking import Tracker
    from tunelog.trainers.hf import _Loop, endless_batches
    from tunelog.training.data import read_texts, tokenize
    from tunelog.training.model import load_for_training

    spec = demo_spec(max_steps=BLOCKS * STEPS_PER_BLOCK * 2 + 10)
    torch.manual_seed(0)
    loaded = load_for_training(spec)
    data = tokenize(read_texts(spec, spec.data.train, "data.train"), loaded.tokenizer, spec.data.max_length)
    schedule = make_plan(spec, len(data)).schedule
    with Tracker().run("bench-tracking") as run:
        loops = {
            "tracked": _Loop(spec, loaded, data, None, schedule, run),
            "untracked": _Loop(spec, loaded, data, None, schedule, DroppingLogger()),
        }
        batches = endless_batches(data, spec.train.batch_size, 0)
        times: dict[str, list[float]] = {"tracked": [], "untracked": []}
        step = 0
        for block in range(BLOCKS + 1):
            for arm in ("tracked", "untracked") if block % 2 else ("untracked", "tracked"):
                start = time.perf_counter()
                for _ in range(STEPS_PER_BLOCK):
                    step += 1
                    loss, norm, samples, tokens, secs = loops[arm]._optimizer_step(step, batches)
                    loops[arm]._log_step(step, loss, norm, samples, tokens, secs)
                if block:  # block 0 is warm-up
                    times[arm].append((time.perf_counter() - start) / STEPS_PER_BLOCK)
        start = time.perf_counter()
        run.flush()
        flush_ms = (time.perf_counter() - start) * 1000
    tracked, untracked = statistics.mean(times["tracked"]), statistics.mean(times["untracked"])
    print(f"steps per arm: {BLOCKS * STEPS_PER_BLOCK}, metrics per step: 6")
    print(
        f"mean step: untracked {untracked * 1000:.2f} ms, tracked {tracked * 1000:.2f} ms; "
        f"final flush {flush_ms:.1f} ms"
    )
    print(verdict("tracking_overhead", tracked / untracked, "<=", 1.02))


if __name__ == "__main__":
    main()
