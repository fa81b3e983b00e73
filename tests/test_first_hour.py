"""The first hour as the README has a newcomer live it: one store wherever they stand, with
`MLFLOW_TRACKING_URI` relative, or without it; the Python snippets on the store the CLI wrote; a reading
verb from another folder says where it looked and creates nothing."""

import subprocess
import sys

from conftest import run_cli, subprocess_env

SNIPPET = """
import mlflow, tunelog
m = tunelog.load_model("models:/test-lora@champion")
mlflow.set_tracking_uri(tunelog.tracking_uri())
out = mlflow.pyfunc.load_model("models:/test-lora@champion").predict(["Æ e"])
print("loaded", type(m.model).__name__, "answered", len(out))
"""


def test_without_a_uri_the_cli_and_the_readmes_python_share_one_store(quick_spec, tmp_path, monkeypatch):
    home = tmp_path / "project"
    home.mkdir()
    monkeypatch.chdir(home)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert run_cli("train", quick_spec, "--set", "train.max_steps=4").returncode == 0
    promoted = run_cli("promote", "--experiment", "test")  # the name defaults to EXPERIMENT-lora
    assert promoted.returncode == 0 and "registered test-lora version 1" in promoted.stdout, promoted.stderr
    env = {k: v for k, v in subprocess_env("").items() if k != "MLFLOW_TRACKING_URI"}
    snippet = subprocess.run(
        [sys.executable, "-c", SNIPPET], cwd=home, env=env, capture_output=True, text=True, timeout=600
    )
    assert snippet.returncode == 0 and "answered 1" in snippet.stdout, snippet.stderr[-2000:]
    assert sorted(p.name for p in home.iterdir()) == ["mlruns"]  # MLflow's own ./mlflow.db was never made


def test_a_relative_uri_is_one_file_wherever_a_verb_runs(quick_spec, tmp_path, monkeypatch):
    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (home / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.chdir(home)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db")
    assert run_cli("train", quick_spec, "--set", "train.max_steps=2").returncode == 0
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(home / "sub")  # below the project: its store, found the way git finds .git
    assert run_cli("changelog", "--experiment", "test", "--no-log").returncode == 0
    monkeypatch.chdir(elsewhere)
    lost = run_cli("changelog", "--experiment", "test", "--no-log")
    assert lost.returncode == 1 and f"no tunelog store at {elsewhere / 'mlruns' / 'mlflow.db'}" in lost.stderr
    assert not list(elsewhere.iterdir()) and sorted(p.name for p in home.iterdir()) == ["mlruns", "sub"]
