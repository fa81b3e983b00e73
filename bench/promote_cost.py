"""Promote cost of the champion as an MLflow model: the same demo training twice, once as today (the adapter
logged as an MLflow LoggedModel through the transformers flavor) and once as before (a plain `adapter/`
artifact folder, the path a merged stage still takes), then `promote` of each, three times.

Targets: promote's time with the MLflow model at most 1.5x promote of the plain folder
(`promote_cost`), and the bytes a trial stores for its adapter at most 1.2x the adapter folder's
(`model_bytes_per_trial`: MLmodel, environment files and the tokenizer come with it). The flavor's
logging time at the end of training is printed too.
"""

from __future__ import annotations

import statistics
import time

from _common import demo_spec, sized, temp_store, verdict

REPEATS = sized(3, 1)


def _bytes(listing, path: str = "") -> int:
    """Bytes under `path` of a run's or a LoggedModel's artifacts (`listing(path)` lists one level)."""
    total = 0
    for item in listing(path):
        total += _bytes(listing, item.path) if item.is_dir else (item.file_size or 0)
    return total


def train(tracker, name: str, plain: bool) -> tuple[str, float]:
    """(run id, seconds spent saving the adapter) of a short demo training."""
    import tunelog.trainers.hf as hf
    from tunelog.train import run_training

    saving = {"s": 0.0}
    original_save, original_base = hf._Loop._save_adapter, hf.base_reference

    def timed(self, step):
        start = time.perf_counter()
        original_save(self, step)
        saving["s"] = time.perf_counter() - start

    hf._Loop._save_adapter = timed
    if plain:
        hf.base_reference = lambda spec, tokenizer: None  # the plain `adapter/` artifact, as before
    try:
        spec = demo_spec(max_steps=sized(20, 4), eval_every=None).with_overrides({"tracking.run_name": name})
        run_id, _ = run_training(spec, tracker)
    finally:
        hf._Loop._save_adapter, hf.base_reference = original_save, original_base
    return run_id, saving["s"]


def main() -> None:
    from tunelog.promote import promote
    from tunelog.tracking import Tracker

    temp_store()
    tracker = Tracker()
    model_run, model_save = train(tracker, "as-model", plain=False)
    plain_run, plain_save = train(tracker, "as-folder", plain=True)
    times: dict[str, list[float]] = {"model": [], "plain": []}
    for i in range(REPEATS):
        for kind, run_id in (("model", model_run), ("plain", plain_run)):
            record = tracker.get_run(run_id)
            start = time.perf_counter()
            promote(tracker, record, f"bench-{kind}-{i}")
            times[kind].append(time.perf_counter() - start)
    client = tracker.client
    model_id = tracker.get_run(model_run).tags["tunelog.model_id"]
    model_bytes = _bytes(lambda p: client.list_logged_model_artifacts(model_id, p or None))
    folder_bytes = _bytes(lambda p: client.list_artifacts(plain_run, p or None), "adapter")
    as_model, as_folder = statistics.median(times["model"]), statistics.median(times["plain"])
    print(
        f"saving the adapter at the end of training: {model_save:.2f} s as an MLflow model, {plain_save:.2f} s as a folder"
    )
    print(f"promote (median of {REPEATS}): {as_model:.2f} s as an MLflow model, {as_folder:.2f} s as a folder")
    print(f"bytes a trial stores for its adapter: {model_bytes:,} as an MLflow model, {folder_bytes:,} as a folder")
    print(verdict("model_bytes_per_trial", model_bytes / folder_bytes, "<=", 1.2))
    print(verdict("promote_cost", as_model / as_folder, "<=", 1.5))


if __name__ == "__main__":
    main()
