"""Import speed: 1,000 run folders, each a config and TensorBoard events (torch's SummaryWriter: three tags
over 20 steps, as a short kohya or Lightning run leaves them), imported into a fresh SQLite store.

Target: at least 50 folders/s for the whole `tunelog import` (read every file, merge, judge, write the
runs). For scale, the same runs written one by one through MLflow's client (create_run, log_batch,
set_terminated: what a hand-written import script does) are timed too, and the ratio printed.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from _common import sized, temp_store, verdict

N = sized(1000, 30)


def make_tree(root: Path, n: int) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    rng = random.Random(0)
    for i in range(n):
        folder = root / f"run_{i:04d}"
        folder.mkdir(parents=True)
        config = {"network_dim": rng.choice([8, 16, 32]), "learning_rate": rng.choice([1e-4, 2e-4]), "seed": i}
        (folder / "config.json").write_text(json.dumps({**config, "output_dir": f"/out/run_{i:04d}"}))
        writer = SummaryWriter(log_dir=str(folder / "logs" / "network_train"))
        for step in range(1, 21):
            wall = 1_700_000_000 + i * 3600 + step
            writer.add_scalar("loss/current", 1.0 / step + rng.random() * 0.01, step, walltime=wall)
            writer.add_scalar("loss/average", 1.0 / step, step, walltime=wall)
            writer.add_scalar("lr/unet", config["learning_rate"], step, walltime=wall)
        writer.close()
    return root


def plain_client(tracker, tree: Path) -> float:
    """The runs the import wrote, written again one by one through the client: seconds."""
    records = tracker.all_runs("imported")
    client = tracker.client
    histories = {r.run_id: [m for key in r.metrics for m in client.get_metric_history(r.run_id, key)] for r in records}
    start = time.perf_counter()
    for r in records:
        tracker.create_finished_run(
            "plain",
            r.name,
            r.start_ms,
            r.end_ms or r.start_ms,
            r.status,
            r.params,
            r.tags,
            [(m.key, m.value, m.timestamp, m.step) for m in histories[r.run_id]],
        )
    return time.perf_counter() - start


def main() -> None:
    from tunelog.importer import import_tree
    from tunelog.tracking import Tracker

    temp_store()
    tree = make_tree(Path(tempfile.mkdtemp(prefix="tunelog-import-")) / "runs", N)
    tracker = Tracker()
    tracker.experiment_id("imported")  # the store's tables exist before the clock starts
    start = time.perf_counter()
    report = import_tree(tree, tracker, "imported", metric="loss/average")
    seconds = time.perf_counter() - start
    assert len(report.imported) == N, report.warnings[:3]
    plain = plain_client(tracker, tree)
    rate = N / seconds
    print(f"{N} folders imported in {seconds:.2f} s ({rate:.0f} folders/s)")
    print(f"the same runs written one by one through MLflow's client: {plain:.2f} s ({N / plain:.0f} runs/s)")
    print(f"import (read + write) vs the client's writes alone: {seconds / plain:.2f}x the time")
    print(verdict("import_speed", rate, ">=", 50))


if __name__ == "__main__":
    main()
