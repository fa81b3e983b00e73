"""Sweeps through Optuna's gRPC storage proxy (`tunelog study-server`): two invocations started together in
two folders share one study over `grpc://`, with one sweep run and the named configs queued once; a trial
whose worker on another machine went silent is failed and re-queued (heartbeats do not cross the proxy: the
trial's `tunelog.beat` does); `analyze` reads through it; bad addresses are one line."""

import subprocess
import sys
import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from conftest import _kill_group, free_port, run_cli, subprocess_env
from test_sweep_shared import N_TRIALS, shared_spec
from tunelog.errors import TunelogError
from tunelog.sweep import open_storage


@pytest.fixture
def study_server(tmp_path, store):
    """`tunelog study-server` over a SQLite study database on a free port of 127.0.0.1; stopped after."""
    port = free_port()
    log = open(tmp_path / "study-server.log", "w")  # noqa: SIM115 (closed below)
    argv = [sys.executable, "-m", "tunelog.cli", "study-server", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]
    proc = subprocess.Popen(
        [*argv, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(store),
        start_new_session=True,
    )  # fmt: skip
    url = f"grpc://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # its answer, not a fixed sleep
            try:
                open_storage(url)
                break
            except TunelogError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "study-server.log").read_text()
                time.sleep(0.2)
        yield url
    finally:
        _kill_group(proc)
        log.close()


def test_two_invocations_share_one_study_through_the_study_server(study_server, tmp_path, store):
    spec = shared_spec(tmp_path, sleep=0.0)
    procs = []
    for seat in ("a", "b"):  # two "machines": own working folders, one store, one study server
        (tmp_path / seat).mkdir()
        argv = [sys.executable, "-m", "tunelog.cli", "sweep", spec, "--storage", study_server]
        procs.append(subprocess.Popen(argv, cwd=tmp_path / seat, env=subprocess_env(store), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True))  # fmt: skip
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            _kill_group(p)
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    study = optuna.load_study(study_name="shared", storage=open_storage(study_server))
    done = [t for t in study.trials if t.user_attrs.get("tunelog.outcome") != "over_budget"]
    assert len(done) == N_TRIALS and all(t.state == TrialState.COMPLETE for t in done)
    named = [t.user_attrs.get("tunelog.config") for t in done if t.user_attrs.get("tunelog.config")]
    assert sorted(named) == ["high", "low"]  # queued once, not once per invocation
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("shared").experiment_id
    sweeps = client.search_runs([experiment], "tags.`tunelog.kind` = 'sweep'")
    trials = client.search_runs([experiment], "tags.`tunelog.kind` = 'trial'")
    assert len(sweeps) == 1 and len(trials) == N_TRIALS
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {sweeps[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in [*sweeps, *trials])
    again = run_cli("sweep", spec, "--storage", study_server)  # resumed: the study has its trials, nothing more
    assert again.returncode == 0, again.stderr[-1500:]
    assert len(optuna.load_study(study_name="shared", storage=open_storage(study_server)).trials) == len(study.trials)
    assert len(client.search_runs([experiment], "tags.`tunelog.kind` = 'sweep'")) == 1
    best = min(done, key=lambda t: t.value)
    analyzed = run_cli("analyze", "shared", "--storage", study_server)
    assert analyzed.returncode == 0 and f"1. trial {best.number}: {best.value:.4f}" in analyzed.stdout


def test_a_trial_silent_past_the_grace_on_another_machine_is_failed_and_queued_again(study_server, tmp_path, store):
    """Through the proxy no heartbeat is recorded; a RUNNING trial owned by another host whose `tunelog.beat`
    is older than the grace is failed (interrupted) by the next sweep, and its params train again."""
    spec = shared_spec(tmp_path, sleep=0.0)
    storage = open_storage(study_server)
    study = optuna.create_study(study_name="shared", storage=storage, direction="minimize")
    lost = study.ask({"train.learning_rate": optuna.distributions.FloatDistribution(2e-5, 4e-4, log=True)})
    lost.set_user_attr("tunelog.owner", "another-machine:4242")
    lost.set_user_attr("tunelog.beat", time.time() - 3600)
    swept = run_cli("sweep", spec, "--storage", study_server, "--n-trials", "3")
    assert swept.returncode == 0, swept.stderr[-2000:]
    trials = optuna.load_study(study_name="shared", storage=open_storage(study_server)).trials
    assert trials[lost.number].state == TrialState.FAIL
    assert trials[lost.number].user_attrs["tunelog.outcome"] == "interrupted"
    again = [t for t in trials if t.number != lost.number and t.params == lost.params]
    assert again and again[0].state == TrialState.COMPLETE


def test_bad_study_server_addresses_are_one_line(tmp_path, store):
    closed = free_port()
    for url, said in [
        (f"grpc://127.0.0.1:{closed}", "no study server answers there"),
        ("grpc://127.0.0.1:99999", "accepted: grpc://HOST:PORT"),
    ]:
        result = run_cli("analyze", "shared", "--storage", url)
        assert result.returncode == 1 and said in result.stderr and len(result.stderr.strip().splitlines()) == 1
    journal = run_cli("study-server", "--storage", str(tmp_path / "optuna.journal"))
    assert journal.returncode == 1 and "does not serve a journal file" in journal.stderr
