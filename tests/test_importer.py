"""import: legacy run folders (a config and a log each) turned into finished runs, once."""

from mlflow import MlflowClient

from legacy_history import T0
from tunelog.importer import import_tree
from tunelog.tracking import Tracker


def test_import_reads_every_folder_and_warns_once_for_the_broken_log(imported):
    _, report = imported
    assert len(report.imported) == 19 and report.skipped == []
    assert len(report.warnings) == 1 and report.warnings[0].startswith("20_broken_log: skipped: log train.log")


def test_import_is_idempotent(imported, store):
    tree, _ = imported
    again = import_tree(tree, Tracker(), "speech", metric="val_loss")
    assert again.imported == [] and len(again.skipped) == 19
    assert len(Tracker().all_runs("speech")) == 19


def test_imported_runs_carry_times_notes_outcomes_and_metrics(imported, store):
    runs = {r.name: r for r in Tracker().all_runs("speech")}
    base = runs["01_baseline"]
    assert base.start_ms == int(T0.timestamp() * 1000) and base.end_ms - base.start_ms == 45 * 60 * 1000
    assert base.metrics["val_loss"] == 2.0 and base.params["lr"] == "0.001"
    assert base.metrics["tunelog/score"] == 2.0  # the headline, lower is better
    assert runs["04_recovery"].tags["mlflow.note.content"] == "Resumed from the baseline's best checkpoint."
    assert runs["02_lr_5e-3"].tags["tunelog.outcome"] == "diverged"
    assert runs["10_batch_128"].tags["tunelog.outcome"] == "oom"
    assert runs["16_final_tune"].metrics["final_val_loss"] == 1.40
    assert runs["19_layers_8_args"].params["layers"] == "8"  # --key value args
    history = MlflowClient(store).get_metric_history(runs["06_ema"].run_id, "val_loss")  # tqdm postfixes
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [3.0, 2.5, 1.7]
