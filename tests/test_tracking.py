"""The tracker against a real SQLite MLflow store: store resolution, run endings, buffered metrics."""

import pytest
from mlflow import MlflowClient

from tunelog.errors import TrainingInterrupted
from tunelog.tracking import TAG_OUTCOME, TAG_PARENT, TAG_REASON, Tracker, tracking_uri


def test_default_store_is_sqlite_under_mlruns(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    with Tracker().run("exp") as run:
        run.log_text("hello", "note.txt")
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert (tmp_path / "mlruns" / "artifacts" / run.run_id / "artifacts" / "note.txt").is_file()


def test_env_uri_takes_over(store):
    assert tracking_uri() == store


def finished(store, run_id):
    return MlflowClient(store).get_run(run_id)


def test_clean_exit_is_finished_with_metrics_flushed(store):
    with Tracker().run("exp", run_name="r") as run:
        for step in range(1, 51):
            run.log_metrics({"train/loss": 1.0 / step}, step=step)
    client = MlflowClient(store)
    assert client.get_run(run.run_id).info.status == "FINISHED"
    history = client.get_metric_history(run.run_id, "train/loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 51))


def test_exception_ends_failed_with_reason(store):
    with pytest.raises(ValueError):
        with Tracker().run("exp") as run:
            run.log_metrics({"x": 1.0}, step=1)
            raise ValueError("boom")
    got = finished(store, run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags[TAG_OUTCOME] == "failed" and "ValueError: boom" in got.data.tags[TAG_REASON]
    assert got.data.metrics["x"] == 1.0  # what was logged before the crash is kept


@pytest.mark.parametrize("exc", [KeyboardInterrupt, TrainingInterrupted])
def test_interrupt_ends_killed(store, exc):
    with pytest.raises(exc):
        with Tracker().run("exp") as run:
            raise exc()
    assert finished(store, run.run_id).info.status == "KILLED"


def test_precise_outcome_is_not_overwritten_by_failure(store):
    with pytest.raises(RuntimeError):
        with Tracker().run("exp") as run:
            run.set_outcome("oom", "CUDA out of memory")
            raise RuntimeError("out of memory")
    assert finished(store, run.run_id).data.tags[TAG_OUTCOME] == "oom"


def test_unknown_outcome_refused(store):
    with Tracker().run("exp") as run:
        with pytest.raises(ValueError, match="accepted: ok, oom"):
            run.set_outcome("great")


def test_child_run_links_parent(store):
    tracker = Tracker()
    with tracker.run("exp") as parent:
        with tracker.run("exp", parent_run_id=parent.run_id) as child:
            pass
    assert finished(store, child.run_id).data.tags[TAG_PARENT] == parent.run_id


def test_joins_run_created_by_mlflow_run(store, monkeypatch):
    client = MlflowClient(store)
    exp = client.create_experiment("projects")
    outer = client.create_run(exp)
    monkeypatch.setenv("MLFLOW_RUN_ID", outer.info.run_id)
    tracker = Tracker()
    with tracker.run("ignored", run_name="joined") as run:
        run.log_params({"a": 1})
        with tracker.run("ignored", parent_run_id=run.run_id) as child:  # children never join
            pass
    assert run.run_id == outer.info.run_id
    got = client.get_run(outer.info.run_id)
    assert got.data.params["a"] == "1" and got.data.tags["mlflow.runName"] == "joined"
    assert child.run_id != outer.info.run_id


def test_the_contract_says_which_value_is_better():
    import math

    from tunelog import tracking as t

    assert t.better(1.0, 2.0, "minimize") and t.better(2.0, 1.0, "maximize")
    assert not t.better(math.nan, 1.0, "minimize") and t.better(1.0, math.nan, "maximize")
    runs = [("a", 3.0), ("b", None), ("c", math.nan), ("d", 1.5)]
    assert t.best_of(runs, lambda r: r[1], "minimize")[0] == "d"
    assert t.best_of(runs, lambda r: r[1], "maximize")[0] == "a"
    assert t.best_of([("x", None)], lambda r: r[1], "minimize") is None
    assert t.score(0.9, "maximize") == -0.9 and t.score(2.5, "minimize") == 2.5  # lower is better, always
    assert set(t.KINDS) >= {"train", "trial", "sweep", "probe", "stage", "pipeline", "import", "changelog"}


def test_the_store_is_found_like_git_finds_its_folder(tmp_path, monkeypatch):
    """Without MLFLOW_TRACKING_URI a verb run from a sub-folder uses the project's store, not a new empty one."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TUNELOG_STORE_DIR", raising=False)
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").write_bytes(b"")
    deep = tmp_path / "experiments" / "stage2"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"
    elsewhere = tmp_path.parent / f"{tmp_path.name}-other"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no store above: one is made here
    assert tracking_uri() == f"sqlite:///{elsewhere.resolve() / 'mlruns' / 'mlflow.db'}"


def test_staged_params_go_with_the_next_write_and_are_never_lost(store):
    """`later` saves a transaction per staged write (a sweep trial's spec params ride with the trainer's first
    tags); what was staged still reaches the store when no write follows, or when the body fails."""
    with Tracker().run("exp") as run:
        run.later(params={"a": 1}, tags={"t": "x"})
        run.set_tags({"u": "y"})
        assert finished(store, run.run_id).data.params["a"] == "1"  # readers see it once the next write is done
        run.later(params={"b": 2})
        run.log_new_params({"b": 3, "e": 5})  # a staged param is the run's: it keeps its value
    got = finished(store, run.run_id).data
    assert got.params == {"a": "1", "b": "2", "e": "5"} and got.tags["t"] == "x" and got.tags["u"] == "y"
    with pytest.raises(ValueError):
        with Tracker().run("exp") as run:
            run.later(params={"c": 3})
            raise ValueError("boom")
    assert finished(store, run.run_id).data.params == {"c": "3"}


def test_a_sub_second_run_gets_no_system_metrics(store):
    """MLflow's monitor logs nothing before its first interval; tunelog's starts after a run's first second,
    so a cheap sweep trial pays for no monitor and stores no figures that describe the machine, not it."""
    with Tracker().run("exp") as run:
        with run.system_metrics(True):
            run.log_metrics({"loss": 1.0}, step=1)
    assert set(finished(store, run.run_id).data.metrics) == {"loss"}
