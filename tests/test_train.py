"""The built-in trainer end to end on the demo's tiny model, against a real MLflow store."""

import math
import subprocess
import sys

import mlflow
import pytest
from mlflow import MlflowClient

from conftest import REPO, demo_raw, run_cli, signal_when_ready, subprocess_env, write_spec
from tunelog.errors import MachineError
from tunelog.spec import load_spec, validate
from tunelog.tracking import TAG_KIND, TAG_OUTCOME, TAG_REASON, Tracker
from tunelog.train import run_training
from tunelog.trainers.hf import HFTrainer


def spec_from(tmp_path, **train):
    return load_spec(write_spec(tmp_path / "spec.yaml", demo_raw(**train)))


def artifacts(client, run_id, path=None):
    return {f.path for f in client.list_artifacts(run_id, path)}


def losses(client, run_id, key="train/loss"):
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_cli_train_produces_a_complete_run(tmp_path, store, quick_spec):
    proc = run_cli("train", str(quick_spec), "--config", "balanced", "--set", "data.sample_prompts=['Det var en']")
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("test").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_OUTCOME] == "ok" and run.data.tags[TAG_KIND] == "train"
    assert run.data.params["lora.r"] == "16" and run.data.params["train.learning_rate"] == "0.004"
    assert "Purpose:" in run.data.tags["mlflow.note.content"]
    assert len(losses(client, run.info.run_id)) >= 20
    assert len(losses(client, run.info.run_id, "eval/loss")) == 3  # steps 10, 20 and the end (25)
    for key in (
        "train/lr",
        "train/grad_norm",
        "perf/samples_per_s",
        "perf/tokens_per_s",
        "perf/peak_mem_gb",
        "eval/perplexity",
    ):
        assert key in run.data.metrics, key
    assert {"plots", "spec.yaml", "samples.md"} <= artifacts(client, run.info.run_id)
    said = open(client.download_artifacts(run.info.run_id, "samples.md", str(tmp_path))).read()
    before, after = said.split("**before:**")[1].split("**after (25 steps):**")  # the prompt answered twice
    assert "## Det var en" in said and before.strip() != after.strip()  # greedy, so a change is the adapter's
    assert {"plots/loss.png", "plots/lr_schedule.png"} <= artifacts(client, run.info.run_id, "plots")
    # the adapter is the run's MLflow model (stored once): linked to the run and its final eval metric
    model_id = run.data.tags["tunelog.model_id"]
    (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert logged.model_id == model_id and logged.source_run_id == run.info.run_id
    final_eval = run.data.metrics["eval/loss"]
    assert {(m.key, m.value) for m in logged.metrics} >= {("eval/loss", final_eval)}
    assert "artifacts/adapter/adapter_model.safetensors" in {
        a.path for a in client.list_logged_model_artifacts(model_id, "artifacts/adapter")
    }
    # the data it read as dataset inputs; the eval set's digest is the run's eval key
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "eval"} and inputs["train"].name == "train.txt"
    assert inputs["eval"].digest == run.data.tags["tunelog.eval_key"]
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics)  # MLflow's system metrics
    assert f"run {run.info.run_id}: outcome ok" in proc.stdout
    assert run.data.metrics["tunelog/score"] == run.data.metrics["eval/loss"]  # minimized: the value itself


def test_training_lowers_eval_loss_and_follows_the_schedule(tmp_path, store):
    spec = spec_from(tmp_path, max_steps=40, eval_every=5)
    run_id, result = run_training(spec, Tracker())
    client = MlflowClient(store)
    evals = losses(client, run_id, "eval/loss")
    assert evals[-1] < evals[0] - 0.3
    lrs = losses(client, run_id, "train/lr")
    assert max(lrs) == pytest.approx(spec.train.learning_rate)
    assert lrs[-1] == pytest.approx(spec.train.end_lr)
    assert result.metrics["eval/loss"] == pytest.approx(evals[-1])


def test_same_spec_and_seed_give_the_same_losses(tmp_path, store):
    spec = spec_from(tmp_path)
    first, _ = run_training(spec, Tracker())
    second, _ = run_training(spec, Tracker())
    client = MlflowClient(store)
    assert losses(client, first) == losses(client, second)
    other, _ = run_training(spec.model_copy(update={"train": spec.train.model_copy(update={"seed": 1})}), Tracker())
    assert losses(client, other) != losses(client, first)


def test_divergence_stops_the_run_with_a_reason(tmp_path, store):
    spec = spec_from(
        tmp_path, learning_rate=200.0, schedule="constant", max_grad_norm=None, optimizer="sgd", max_steps=60
    )
    run_id, result = run_training(spec, Tracker())
    assert result.outcome == "diverged" and result.steps < 60
    got = MlflowClient(store).get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.data.tags[TAG_OUTCOME] == "diverged"
    assert "first step" in got.data.tags[TAG_REASON] or "nan" in got.data.tags[TAG_REASON].lower()
    assert "adapter" not in artifacts(MlflowClient(store), run_id)


def test_adamw8bit_and_ema_paths_train(tmp_path, store):
    spec = spec_from(tmp_path, optimizer="adamw8bit", ema_decay=0.9, max_steps=12, eval_every=None)
    run_id, result = run_training(spec, Tracker())
    assert result.outcome == "ok" and math.isfinite(result.metrics["eval/loss"])
    assert MlflowClient(store).get_run(run_id).data.params["train.ema_decay"] == "0.9"


def test_bf16_autocast_on_cpu_trains(tmp_path, store):
    _, result = run_training(spec_from(tmp_path, precision="bf16", max_steps=5), Tracker())
    assert result.outcome == "ok"


def test_4bit_without_cuda_is_a_clear_error(tmp_path, store):
    raw = demo_raw()
    raw["model"] = {"name": "some/model", "load_in_4bit": True}
    spec = validate(raw, "spec.yaml", str(tmp_path))
    with pytest.raises(MachineError, match="model.load_in_4bit: .*needs a CUDA GPU"):
        run_training(spec, Tracker())


def test_fp16_on_cpu_is_a_clear_error_and_the_run_is_closed(tmp_path, store):
    with pytest.raises(MachineError, match="train.precision: fp16 needs a CUDA GPU"):
        run_training(spec_from(tmp_path, precision="fp16"), Tracker())
    client = MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("test").experiment_id])[0]
    assert run.info.status == "FAILED" and run.data.tags[TAG_OUTCOME] == "failed"


class CrashingLogger:
    """Wraps the real run logger and raises at a chosen step: a crash in the middle of training."""

    def __init__(self, run, crash_at):
        self._run, self._crash_at = run, crash_at

    def __getattr__(self, name):
        return getattr(self._run, name)

    def log_metrics(self, metrics, step=None):
        if step == self._crash_at:
            raise RuntimeError(f"disk full at step {step}")
        self._run.log_metrics(metrics, step)


def test_exception_mid_training_leaves_the_run_failed(tmp_path, store):
    spec = spec_from(tmp_path)
    with pytest.raises(RuntimeError, match="disk full at step 7"):
        with Tracker().run("test") as run:
            HFTrainer().train(spec, CrashingLogger(run, crash_at=7))
    got = MlflowClient(store).get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert "disk full at step 7" in got.data.tags[TAG_REASON]
    assert len(losses(MlflowClient(store), run.run_id)) == 6  # steps before the crash were kept


def test_sigterm_mid_training_leaves_the_run_killed(tmp_path, store):
    spec_path = write_spec(tmp_path / "long.yaml", demo_raw(max_steps=100_000, eval_every=None))
    client = MlflowClient(store)

    def training():  # waits on state (step metrics in the store), not on time
        exp = client.get_experiment_by_name("test")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and client.get_metric_history(runs[0].info.run_id, "train/loss"):
            return runs[0].info.run_id
        return None

    argv = [sys.executable, "-m", "tunelog.cli", "train", spec_path]
    run_id, code, err = signal_when_ready(argv, subprocess_env(store), training, "training")
    assert code == 143, err
    got = client.get_run(run_id)
    assert got.info.status == "KILLED"
    assert "SIGTERM" in err and "Traceback" not in err


@pytest.mark.slow
def test_mlflow_run_entry_point_joins_its_run(tmp_path, store):
    spec_path = write_spec(tmp_path / "spec.yaml", demo_raw(max_steps=20))
    proc = subprocess.run(
        [
            "mlflow",
            "run",
            str(REPO),
            "-e",
            "train",
            "--env-manager",
            "local",
            "--experiment-name",
            "projects",
            "-P",
            f"spec={spec_path}",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(store),
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("projects").experiment_id])
    assert len(runs) == 1  # tunelog joined the run `mlflow run` made instead of opening a second one
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags[TAG_OUTCOME] == "ok"
    assert len(losses(client, run.info.run_id)) == 20
    assert {"plots", "spec.yaml"} <= artifacts(client, run.info.run_id) and run.data.tags["tunelog.model_id"]


def test_training_off_a_terminal_prints_its_progress(tmp_path, store, monkeypatch, capsys):
    """Where stderr is no terminal (mlflow run, a sweep's console, CI) tqdm draws nothing: a line says the step,
    the loss and the time left instead (every 10 s; here every step, the interval set to 0)."""
    import tunelog.training.progress as progress

    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    spec = load_spec(write_spec(tmp_path / "spec.yaml", demo_raw(max_steps=5, eval_every=None)))
    run_training(spec, Tracker())
    lines = [line for line in capsys.readouterr().err.splitlines() if "train: step" in line]
    assert [line.split("step ")[1].split(",")[0] for line in lines] == [f"{s}/5" for s in range(1, 6)]
    assert all("loss" in line and "s left" in line for line in lines)
