"""The MLflow experiments people already have, logged by the real integrations (tests/world_mlflow.py: transformers'
MLflowCallback, TRL's SFTTrainer, Lightning's MLFlowLogger, optuna-integration's MLflowCallback, a hand-written
nested loop; no tunelog tag anywhere): `changelog`, `diff`, `promote` and `analyze` read them as a user would.
Every expectation is computed here from what the store holds and how it was built, never typed in."""

import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import run_cli
from tunelog.changelog import collect_and_build
from tunelog.tracking import Tracker

EXPERIMENTS = ("native", "trl", "lightning", "study", "loop")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One store with every experiment, built once for this module (the tests only read it)."""
    from world_mlflow import build_world

    folder = tmp_path_factory.mktemp("world")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    before, here = os.environ.get("MLFLOW_TRACKING_URI"), os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(folder)  # a SQLite store's artifacts default to ./mlruns of the folder its experiments are made in
    from mlflow.tracking._tracking_service import utils

    fluent = utils._tracking_uri  # optuna-integration and MLFlowLogger set MLflow's process-wide URI: put it back
    try:
        build_world(uri, folder)
        utils._tracking_uri = fluent
        yield uri, folder
    finally:
        utils._tracking_uri = fluent
        os.chdir(here)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def in_world(world, monkeypatch):
    uri, folder = world
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(folder)
    return uri, folder


def stored(uri: str, experiment: str):
    client = MlflowClient(uri)
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)


def test_no_tunelog_tag_anywhere_in_the_world(in_world):
    uri, _ = in_world
    for experiment in EXPERIMENTS:
        _, runs = stored(uri, experiment)
        assert runs and not any(k.startswith("tunelog.") for r in runs for k in r.data.tags), experiment


@pytest.mark.parametrize(
    "experiment,metric",
    [("native", "eval_loss"), ("trl", "eval_loss"), ("lightning", "val_loss"), ("loop", "val_loss")],
)
def test_the_best_is_named_by_the_loss_they_logged(in_world, experiment, metric):
    """No --metric: the headline is the loss every run logged, spelled as logged; the best is the lowest of it
    among the runs that ended well (FINISHED, finite), never `eval/loss: n/a`."""
    uri, _ = in_world
    _, runs = stored(uri, experiment)
    log = collect_and_build(Tracker(), experiment)
    fine = [
        r
        for r in runs
        if r.info.status == "FINISHED" and metric in r.data.metrics and math.isfinite(r.data.metrics[metric])
        and not any(not math.isfinite(v) for k, v in r.data.metrics.items() if "loss" in k)
    ]  # fmt: skip
    expected = min(fine, key=lambda r: (r.data.metrics[metric], r.info.start_time))
    assert log.metric == metric and log.best_id == expected.info.run_id
    proc = run_cli("changelog", "--experiment", experiment, "--no-log")
    assert f"Headline metric: `{metric}`" in proc.stdout and "n/a" not in proc.stdout.split("## Runs")[0]
    assert "logged by" in proc.stdout  # it says why this one


def test_identity_keys_are_never_a_change(in_world):
    """`output_dir`, `run_name`, `logging_dir` differ between every Trainer run: recorded, never a change."""
    uri, _ = in_world
    log = collect_and_build(Tracker(), "native")
    for entry in log.entries:
        changed = set(entry.changes.changed) | set(entry.changes.added) | set(entry.changes.removed)
        assert not changed & {"output_dir", "run_name", "logging_dir"}, (entry.name, changed)
    by_name = {e.name: e for e in log.entries}
    _, runs = stored(uri, "native")
    params = {r.info.run_name: r.data.params for r in runs}
    moved = {k for k in params["base"] if params["base"][k] != params["lr1e-2"].get(k)} - {
        "output_dir",
        "run_name",
        "logging_dir",
        "save_strategy",
    }
    assert set(by_name["lr1e-2"].changes.changed) >= moved and "learning_rate" in moved


def test_equal_params_with_different_results_say_the_difference_is_not_recorded(in_world):
    """`r16` changed only the LoRA rank, which MLflowCallback does not log: no logged param differs from
    `lr1e-2`, so the changelog says what differs is not in the record instead of naming a rename as the change."""
    uri, _ = in_world
    _, runs = stored(uri, "native")
    by_name = {r.info.run_name: r for r in runs}
    assert by_name["r16"].data.metrics["eval_loss"] != by_name["lr1e-2"].data.metrics["eval_loss"]
    text = run_cli("changelog", "--experiment", "native", "--no-log").stdout
    assert "No logged param differs from lr1e-2, but its result does" in text and "not in the record" in text


def test_nan_failed_and_pruned_are_flagged_and_never_best(in_world):
    uri, _ = in_world
    _, runs = stored(uri, "loop")
    log = collect_and_build(Tracker(), "loop")
    outcome = {e.name: (e.outcome, e.reason) for e in log.entries}
    nan = [r.info.run_name for r in runs if any(not math.isfinite(v) for v in r.data.metrics.values())]
    failed = [r.info.run_name for r in runs if r.info.status == "FAILED"]
    assert nan and all(outcome[n][0] == "diverged" and "nan" in outcome[n][1] for n in nan)
    assert failed and all(outcome[n][0] == "failed" and "FAILED" in outcome[n][1] for n in failed)
    assert {a.kind for a in log.anomalies} >= {"diverged", "failed"}
    grid = next(e for e in log.entries if e.name == "grid")
    assert grid.kind == "group" and log.best_id != grid.run_id  # a container: not a baseline nor a candidate
    _, trials = stored(uri, "study")
    pruned = {r.info.run_id for r in trials if r.data.tags.get("state") == "PRUNED"}
    study = collect_and_build(Tracker(), "study")
    assert pruned and all(e.outcome == "pruned" for e in study.entries if e.run_id in pruned)
    assert study.best_id not in pruned


def test_a_study_is_told_as_a_sweep(in_world):
    """optuna-integration's runs: a trials table with the best trial, pruned ones counted, no chain of edits."""
    import optuna

    uri, _ = in_world
    _, runs = stored(uri, "study")
    complete = [r for r in runs if r.data.tags.get("state") == "COMPLETE"]
    best = min(complete, key=lambda r: r.data.metrics["value"])
    text = run_cli("changelog", "--experiment", "study", "--no-log").stdout
    n_pruned = sum(1 for r in runs if r.data.tags.get("state") == "PRUNED")
    assert "## Sweep: study" in text and f"{len(runs)} trials: {len(complete)} ok, {n_pruned} pruned" in text
    assert f"Best: **{best.info.run_name}**" in text and "Changes vs" not in text
    assert optuna.study.StudyDirection.MINIMIZE.name == best.data.tags["direction"]


def test_diff_shows_changed_params_and_the_headline_delta_without_inventing_a_lineage(in_world):
    uri, _ = in_world
    _, runs = stored(uri, "lightning")
    a, b = sorted(runs, key=lambda r: r.info.start_time)
    proc = run_cli("diff", a.info.run_name, b.info.run_name, "--experiment", "lightning")
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr
    assert any(line.startswith("~ lr") for line in lines)
    delta = b.data.metrics["val_loss"] - a.data.metrics["val_loss"]
    (row,) = [line for line in lines if line.startswith("val_loss")]
    assert f"{delta:+.4g}" in row  # the headline first, with its delta
    assert "neither run descends from the other" in proc.stdout  # two loose runs: no lineage guessed from order


def test_a_trainer_logged_adapter_is_promoted_from_its_newest_checkpoint_and_loads_both_ways(in_world):
    """HF_MLFLOW_LOG_ARTIFACTS=1 logged `checkpoint-2` and `checkpoint-4` of `base`: promote registers the newest,
    tunelog.load_model and mlflow.pyfunc.load_model open it; a run that logged none is refused in one line."""
    import mlflow
    from safetensors.torch import load_file

    import tunelog
    from tunelog.promote import promote

    uri, folder = in_world
    tracker = Tracker()
    runs = {r.name: r for r in tracker.all_runs("native")}
    refused = run_cli("promote", "--run", runs["r16"].run_id, "--name", "world-lora")
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "no adapter" in refused.stderr or "kept no adapter" in refused.stderr
    promotion = promote(tracker, runs["base"], "world-lora")
    assert promotion.champion
    loaded = tunelog.load_model("models:/world-lora@champion")
    newest = load_file(str(folder / "out/base/checkpoint-4/adapter_model.safetensors"))
    oldest = load_file(str(folder / "out/base/checkpoint-2/adapter_model.safetensors"))
    key = next(k for k in newest if "lora_B" in k)
    (weight,) = [v for k, v in loaded.model.state_dict().items() if k.replace(".default", "") == key]
    assert torch.equal(weight.cpu(), newest[key]) and not torch.equal(newest[key], oldest[key])
    (answer,) = mlflow.pyfunc.load_model("models:/world-lora@champion").predict(["hei"], params={"max_new_tokens": 2})
    assert isinstance(answer, str)


def test_reading_leaves_the_store_alone(in_world, tmp_path):
    """`changelog --no-log` and `diff` write nothing; `analyze` on a user's Optuna SQLite study neither writes to
    it nor switches its journal mode."""
    uri, _ = in_world
    db = uri[len("sqlite:///") :]

    def rows() -> dict[str, int]:
        with sqlite3.connect(db) as con:
            tables = [t for (t,) in con.execute("select name from sqlite_master where type='table'")]
            return {t: con.execute(f"select count(*) from '{t}'").fetchone()[0] for t in tables}

    before = rows()
    assert run_cli("changelog", "--experiment", "loop", "--no-log", "-o", str(tmp_path / "x.md")).returncode == 0
    assert run_cli("diff", "a", "b", "--experiment", "loop").returncode == 0
    assert rows() == before
    study_db = tmp_path / "optuna.db"
    made = (  # the user's own study, made by Optuna alone in a process of its own
        "import optuna; s = optuna.create_study(study_name='mine', storage='sqlite:///" + str(study_db) + "'); "
        "s.optimize(lambda t: t.suggest_float('x', 0, 1) ** 2, n_trials=3)"
    )
    subprocess.run([sys.executable, "-c", made], check=True, capture_output=True, timeout=300)
    with sqlite3.connect(study_db) as con:
        mode = con.execute("pragma journal_mode").fetchone()[0]
    stamp = study_db.stat().st_mtime_ns, study_db.read_bytes()
    proc = run_cli("analyze", "mine", "--storage", f"sqlite:///{study_db}")
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(study_db) as con:
        assert con.execute("pragma journal_mode").fetchone()[0] == mode
    assert (study_db.stat().st_mtime_ns, study_db.read_bytes()) == stamp
    assert not Path(str(study_db) + "-wal").exists()


def test_an_old_file_store_gets_one_line_or_is_read_in_place(tmp_path, monkeypatch):
    """`./mlruns` of files (MLflow 2's default): one line naming `mlflow migrate-filestore`, never a traceback;
    with MLFLOW_ALLOW_FILE_STORE=true it is read in place."""
    made = (
        "import mlflow; mlflow.set_tracking_uri('file://" + str(tmp_path / "mlruns") + "'); "
        "mlflow.set_experiment('old')\n"
        "for name, lr, loss in (('a', 0.1, 0.5), ('b', 0.01, 0.4)):\n"
        "    with mlflow.start_run(run_name=name):\n"
        "        mlflow.log_param('lr', lr); mlflow.log_metric('val_loss', loss)\n"
    )
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}
    subprocess.run([sys.executable, "-c", made], check=True, capture_output=True, env=env, timeout=300)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    proc = subprocess.run(
        [sys.executable, "-m", "tunelog.cli", "changelog", "--experiment", "old", "--no-log"],
        capture_output=True, text=True, timeout=300, env={**os.environ},
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "mlflow migrate-filestore --source" in proc.stderr
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    read = run_cli("changelog", "--experiment", "old", "--no-log")
    assert read.returncode == 0 and "Best: **b** (val_loss 0.4)" in read.stdout
