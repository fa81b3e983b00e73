"""TunelogCallback: a real Hugging Face Trainer script (examples/hf_trainer/train.py, `report_to=["mlflow"]` left
on) as one tunelog run alone, as the trials of a sweep whose pruner stops it through the callback, and diverged on a
NaN loss; its runs read by the changelog exactly like `tunelog train` runs."""

import subprocess
import sys

import pytest
from mlflow import MlflowClient

from conftest import REPO, subprocess_env
from tunelog import changelog as cl
from tunelog import tracking as t
from tunelog.tracking import Tracker

sys.path.insert(0, str(REPO / "examples" / "hf_trainer"))
sys.path.insert(0, str(REPO / "tests" / "fixtures"))


def _all_runs(client):
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_alone_one_run_under_tunelogs_names_and_the_changelog_reads_it_like_a_train_run(tmp_path, store, monkeypatch):
    from train import main

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "alone")
    main(["--max_steps", "4", "--eval_steps", "2", "--output_dir", str(tmp_path / "first")])
    main(["--max_steps", "4", "--eval_steps", "2", "--learning_rate", "0.01", "--output_dir", str(tmp_path / "second")])
    client = MlflowClient()
    runs = _all_runs(client)
    assert len(runs) == 2  # HF's MLflowCallback opened none of its own
    first = next(r for r in runs if r.info.run_name == "first")
    tags, params = first.data.tags, first.data.params
    assert (tags[t.TAG_KIND], tags[t.TAG_OUTCOME], first.info.status) == ("train", "ok", "FINISHED")
    assert params["train.learning_rate"] == "0.005" and params["train.batch_size"] == "8"
    assert params["train.max_steps"] == "4" and params["train.schedule"] == "linear"
    assert (params["lora.r"], params["lora.alpha"], params["lora.target_modules"]) == ("8", "16", "q_proj,v_proj")
    assert params["hf.eval_steps"] == "2" and "hf.learning_rate" not in params
    assert "hf.output_dir" in tags[t.TAG_IDENTITY_KEYS].split(",")
    steps = lambda key: [m.step for m in client.get_metric_history(first.info.run_id, key)]  # noqa: E731
    assert steps("train/loss") == [2, 4] and steps("eval/loss") == [2, 4]
    assert "perf/samples_per_s" in first.data.metrics and "train/lr" in first.data.metrics
    assert "adapter/adapter_model.safetensors" in {a.path for a in client.list_artifacts(first.info.run_id, "adapter")}
    log = cl.collect_and_build(Tracker(), "alone")
    second = log.by_name("second")
    assert second.parent_name == "first" and set(second.changes.changed) == {"train.learning_rate"}  # not hf.output_dir


def test_a_nan_loss_ends_the_run_diverged_and_stops_training(tmp_path, store, monkeypatch):
    from hf_nan_train import NanAfterThree
    from train import main

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "nan")
    main(
        ["--max_steps", "20", "--eval_steps", "10", "--output_dir", str(tmp_path / "nan")], trainer_class=NanAfterThree
    )
    (run,) = _all_runs(MlflowClient())
    assert run.data.tags[t.TAG_OUTCOME] == "diverged"
    assert run.data.tags[t.TAG_REASON] == "train/grad_norm is nan at step 4"  # the first log after the NaN
    assert max(m.step for m in MlflowClient().get_metric_history(run.info.run_id, "train/loss")) == 4  # then it stopped


@pytest.mark.slow
def test_a_sweep_of_the_script_one_trial_pruned_through_the_callback(tmp_path, store, monkeypatch):
    """As the README has users run it: from their own folder, `MLFLOW_TRACKING_URI` relative to it. The
    script runs in the example's folder and must still record into this folder's store, and only there."""
    argv = (
        '["{python}", train.py, --learning_rate, "{train.learning_rate}", --max_steps, "{train.max_steps}",'
        ' --batch_size, "{train.batch_size}", --lora_r, "{lora.r}", --eval_steps, "4", --output_dir, "{output_dir}"]'
    )
    spec = REPO / "examples/hf_trainer/spec.yaml"
    cli = [sys.executable, "-m", "tunelog.cli", "sweep", str(spec), "--n-trials", "4", "--set", "train.max_steps=8"]
    env = subprocess_env("sqlite:///mlruns/mlflow.db")
    proc = subprocess.run(
        [*cli, "--set", f"trainer.argv={argv}"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (spec.parent / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()  # no stray store
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = _all_runs(client)
    kinds = sorted(r.data.tags.get(t.TAG_KIND) for r in runs)
    assert kinds == ["sweep", "trial", "trial", "trial", "trial"]  # nothing else in the store
    trials = [r for r in runs if r.data.tags[t.TAG_KIND] == "trial"]
    for trial in trials:  # the callback's metrics, not stdout's (`loss`, `bos_token_id` from start-up prints)
        assert "train/loss" in trial.data.metrics and "loss" not in trial.data.metrics, trial.data.metrics
        assert not any(k.endswith("token_id") for k in trial.data.metrics)
    pruned = [r for r in trials if r.data.tags[t.TAG_OUTCOME] == "pruned"]
    assert pruned and all(r.data.tags[t.TAG_REASON].startswith("pruned at step 4 (eval/loss") for r in pruned)
    for trial in pruned:  # ended cleanly by the callback after its first eval, no adapter saved
        assert max(m.step for m in client.get_metric_history(trial.info.run_id, "train/loss")) < 8
        assert not client.list_artifacts(trial.info.run_id, "adapter") and t.TAG_MODEL_ID not in trial.data.tags
    done = [r for r in trials if r.data.tags[t.TAG_OUTCOME] == "ok"]
    assert done and all(client.list_artifacts(r.info.run_id, "adapter") for r in done)
