"""Beyond one machine, for real: a PostgreSQL on 127.0.0.1 (scripts/pg_local.sh) holding the Optuna study and,
behind `mlflow server --serve-artifacts`, the MLflow store; three `tunelog sweep` invocations started together
in three folders (three "machines"), one SIGKILLed mid-trial. Skipped only where PostgreSQL is not installed."""

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from conftest import REPO, mlflow_server, run_cli, subprocess_env
from test_sweep_shared import N_TRIALS, kill_one_mid_trial, shared_spec
from tunelog.promote import best_run
from tunelog.sweep import open_storage
from tunelog.tracking import Tracker


@pytest.fixture
def postgres():
    """postgresql://tunelog:PASSWORD@127.0.0.1:PORT with databases `mlflow` and `optuna`; stopped and removed after."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL is not installed (initdb, pg_ctl): the distributed test needs a local one")
    folder = tempfile.mkdtemp(prefix="tunelog-pg-")  # under /tmp: reachable by the unprivileged cluster user
    script = str(REPO / "scripts" / "pg_local.sh")
    try:
        started = subprocess.run(["bash", script, "start", folder], capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stderr + Path(folder, "initdb.log").read_text(errors="replace")
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", script, "stop", folder], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def rows_holding(url: str, secret: str) -> list[str]:
    """Every table row of a PostgreSQL database whose text holds `secret`."""
    import psycopg

    found = []
    with psycopg.connect(url) as con:
        tables = con.execute("select table_name from information_schema.tables where table_schema = 'public'")
        for (table,) in tables.fetchall():
            for row in con.execute(f'select * from "{table}"').fetchall():  # names from the catalogue itself
                if secret in str(row):
                    found.append(f"{table}: {str(row)[:200]}")
    return found


@pytest.mark.slow
def test_three_machines_on_postgresql_and_mlflow_server(postgres, tmp_path, monkeypatch):
    password = postgres.split("@")[0].rsplit(":", 1)[1]
    direct = postgres.replace("postgresql://", "postgresql+psycopg://") + "/mlflow"
    storage = f"{postgres}/optuna"
    with mlflow_server(tmp_path / "server", backend=direct, app="tunelog") as server:  # tunelog's bulk-read app
        spec = shared_spec(tmp_path, sleep=0.1)
        argv = [sys.executable, "-m", "tunelog.cli", "sweep", spec, "--n-trials", str(N_TRIALS), "--storage", storage]
        env = subprocess_env(server)
        procs = []
        for i in range(3):  # three machines: their own folders, one study, one tracking server
            (tmp_path / f"machine{i}").mkdir()
            procs.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    cwd=tmp_path / f"machine{i}",
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        killed, outputs = kill_one_mid_trial(procs, storage)

        study = optuna.load_study(study_name="shared", storage=open_storage(storage))
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        told = [
            (t.number, t.state.name, t.user_attrs.get("tunelog.outcome"), t.user_attrs.get("tunelog.reason"))
            for t in study.trials
        ]
        assert len(done) == N_TRIALS and study.trials[killed].user_attrs["tunelog.outcome"] == "interrupted", told
        presets = sorted(t.user_attrs["tunelog.config"] for t in done if t.user_attrs.get("tunelog.config"))
        assert presets == ["high", "low"]
        assert len({t.params["train.learning_rate"] for t in done}) == N_TRIALS  # three machines, distinct draws

        client = MlflowClient(server)
        exp = client.get_experiment_by_name("shared").experiment_id
        (sweep,) = client.search_runs([exp], "tags.`tunelog.kind` = 'sweep'")
        children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'")
        assert len({c.data.tags["tunelog.trial"] for c in children}) == len(children) == N_TRIALS + 1
        assert sweep.info.status == "FINISHED"
        assert not client.search_runs([exp], "attributes.status = 'RUNNING'")  # nothing left RUNNING
        assert sweep.data.tags["tunelog.storage"] == storage.replace(password, "***")

        # no password anywhere: not in MLflow's tables, not in the study's, not in artifacts, not in output
        assert rows_holding(postgres + "/mlflow", password) == []
        assert rows_holding(postgres + "/optuna", password) == []
        for path in (tmp_path / "server").rglob("*"):
            if path.is_file() and path.name != "server.log":
                assert password not in path.read_text(errors="replace"), path
        assert all(password not in out for out in outputs)

        # readers through the server give what the direct store gives: the changelog, promote's pick
        said = (tmp_path / "server" / "server.log").read_text()
        assert "tunelog: mlflow server worker, gc thresholds" in said and "bulk runs at" in said
        with urllib.request.urlopen(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=shared") as got:
            assert json.loads(body := got.read())["experiment"]["name"] == "shared" and b"\n" not in body  # compact
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
        over_rest = run_cli("changelog", "--experiment", "shared", "--format", "json", "--no-log")
        pick_over_rest = best_run(Tracker(), "shared").run_id
        monkeypatch.setenv("MLFLOW_TRACKING_URI", direct)
        on_store = run_cli("changelog", "--experiment", "shared", "--format", "json", "--no-log")
        assert over_rest.returncode == on_store.returncode == 0, over_rest.stderr + on_store.stderr
        assert json.loads(over_rest.stdout) == json.loads(on_store.stdout)
        assert pick_over_rest == best_run(Tracker(), "shared").run_id == sweep.data.tags["tunelog.best_run_id"]

        # an adapter trained, registered and loaded through the server (the registry in PostgreSQL, the files
        # behind its artifact proxy), loaded in another folder after the training machine's files are gone
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
        assert_loads_through_the_server(tmp_path, MlflowClient(server), monkeypatch)


def assert_loads_through_the_server(tmp_path: Path, client: MlflowClient, monkeypatch) -> None:
    import torch
    from peft import PeftModel

    from test_promote import short_run
    from tunelog import load_model
    from tunelog.promote import promote
    from tunelog.spec import load_spec
    from tunelog.training.model import _tiny_model

    machine = tmp_path / "trainer"
    machine.mkdir()
    shutil.copy(REPO / "examples/demo/tokenizer.json", machine / "tokenizer.json")
    monkeypatch.chdir(machine)
    run_id, _ = short_run(machine, "served", max_steps=8, tokenizer=machine / "tokenizer.json")
    tracker = Tracker()
    assert promote(tracker, tracker.get_run(run_id), "served-lora").champion
    assert client.get_model_version_by_alias("served-lora", "champion").run_id == run_id
    assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")  # through the proxy
    spec = load_spec(machine / "served.yaml")  # the base model is built from its config (no weights to fetch)
    shutil.rmtree(machine)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_model("models:/served-lora@champion")
    ids = loaded.tokenizer(["Æ e heime i dag ."], return_tensors="pt")["input_ids"]
    model_id = client.get_run(run_id).data.tags["tunelog.model_id"]  # the adapter lives in the run's MLflow model
    (on_server,) = [
        p.parent for p in (tmp_path / "server" / "artifacts").rglob("adapter_config.json") if model_id in str(p)
    ]
    reference = PeftModel.from_pretrained(_tiny_model(spec, loaded.tokenizer), str(on_server)).eval()
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, reference(input_ids=ids).logits)
        assert not torch.equal(
            loaded.model(input_ids=ids).logits, _tiny_model(spec, loaded.tokenizer)(input_ids=ids).logits
        )


def test_runs_registering_one_dataset_at_the_same_moment_all_get_it(postgres, tmp_path):
    """Eight runs of one experiment log the same dataset at once on PostgreSQL (MLflow's get-or-create of a
    dataset row is no transaction: the losers of the race hit the unique key). Every run gets its input,
    none raises: bookkeeping must never fail a trial."""
    import threading

    from tunelog.tracking.models import log_datasets

    uri = postgres.replace("postgresql://", "postgresql+psycopg://") + "/mlflow"
    client = MlflowClient(uri)
    experiment = client.create_experiment("race")
    runs = [client.create_run(experiment).info.run_id for _ in range(8)]
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "hello"}\n')
    start, errors = threading.Barrier(len(runs)), []

    def log(run_id: str) -> None:
        start.wait()
        try:
            log_datasets(MlflowClient(uri), run_id, [("train", str(data), "d" * 64)])
        except Exception as exc:  # noqa: BLE001 (what the test counts)
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    threads = [threading.Thread(target=log, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for run_id in runs:
        assert [i.dataset.name for i in client.get_run(run_id).inputs.dataset_inputs] == ["train.jsonl"]


@pytest.mark.parametrize("tries", [1, None], ids=["without-retry", "as-shipped"])
def test_workers_opening_a_fresh_study_database_together_all_open_it(postgres, monkeypatch, tries):
    """Eight workers open a fresh PostgreSQL study database at the same moment: they race Optuna's creation of
    its tables (a duplicate key, a failed commit). As shipped every one opens it; with one try (the old way)
    some fail, which is what the retry is for."""
    import threading

    import tunelog.sweep.study as study_module

    if tries:
        monkeypatch.setattr(study_module, "SCHEMA_TRIES", tries)
    url, start, errors = f"{postgres}/optuna", threading.Barrier(8), []

    def open_it() -> None:
        start.wait()
        try:
            open_storage(url).get_all_studies()
        except Exception as exc:  # noqa: BLE001 (what the test counts)
            errors.append(str(exc)[:200])

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if tries == 1:
        if not errors:
            pytest.skip("the race did not happen this time without the retry (it needs the threads to overlap)")
        assert all("cannot open the study storage" in e for e in errors)
    else:
        assert not errors, errors
