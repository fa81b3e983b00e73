"""The command trainer over a script that behaves like a diffusion-LoRA trainer (tests/fixtures)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from conftest import REPO, subprocess_env
from tunelog.errors import SpecError
from tunelog.spec import load_spec
from tunelog.sweep import Sweep, SweepOptions, default_storage, open_storage
from tunelog.tracking import Tracker
from tunelog.train import run_training

EXAMPLE = REPO / "examples/diffusion_lora/spec.yaml"


def example(tmp_path, **args):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["trainer"]["argv"][1] = str(REPO / "tests/fixtures/fake_diffusion_train.py")
    raw["data"]["train"] = str(REPO / "examples/diffusion_lora/captions.txt")
    extra = [item for k, v in args.items() for item in (f"--{k}", str(v))]
    raw["trainer"]["argv"] += extra
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(path)


def test_metrics_artifacts_and_argv(tmp_path, store):
    run_id, result = run_training(example(tmp_path), Tracker())
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert result.outcome == "ok" and run.info.status == "FINISHED"
    losses = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in losses] == list(range(1, 11))  # tqdm's 1/10 ... 10/10
    assert losses[-1].value < losses[0].value and result.metrics["loss"] == losses[-1].value
    assert "--network_dim" in run.data.params["trainer.rendered_argv"]
    assert "outputs/last.safetensors" in {a.path for a in client.list_artifacts(run_id, "outputs")}


def test_cuda_out_of_memory_is_outcome_oom(tmp_path, store):
    run_id, result = run_training(example(tmp_path, vram_dim_limit=32), Tracker())
    assert result.outcome == "oom" and "CUDA out of memory" in result.reason
    assert MlflowClient(store).get_run(run_id).data.tags["tunelog.outcome"] == "oom"


def test_nan_loss_is_diverged(tmp_path, store):
    spec = example(tmp_path).with_overrides({"trainer.args.optimizer": "AdamW8bit", "train.learning_rate": 3e-4})
    _, result = run_training(spec, Tracker())
    assert result.outcome == "diverged" and "non-finite loss at step 3" in result.reason


def test_unknown_placeholder_is_a_spec_error(tmp_path, store):
    spec = example(tmp_path)
    spec = spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"argv": ["{python}", "{nope.x}"]})})
    try:
        run_training(spec, Tracker())
    except SpecError as exc:
        assert "trainer.argv" in str(exc) and "nope.x" in str(exc)
    else:
        raise AssertionError("expected a SpecError")


def test_sigterm_to_tunelog_stops_the_script_and_kills_the_run(tmp_path, store):
    pid_file = tmp_path / "child.pid"
    spec = example(tmp_path, sleep=0.5, pid_file=pid_file)
    proc = subprocess.Popen([sys.executable, "-m", "tunelog.cli", "train", spec.source], env=subprocess_env(store),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not pid_file.exists():
        time.sleep(0.2)
    assert pid_file.exists(), "the script never started"
    time.sleep(1.0)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    time.sleep(0.5)
    try:
        os.kill(child, 0)
        alive = Path(f"/proc/{child}/stat").read_text().split(") ")[-1][:1] != "Z"
    except ProcessLookupError:
        alive = False
    assert not alive, "the training script outlived tunelog"
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("diffusion-lora").experiment_id])
    assert runs[0].info.status == "KILLED"


def test_sweep_over_the_script_with_seven_rules(tmp_path, store):
    spec = example(tmp_path)
    summary = Sweep(spec, Tracker(), SweepOptions(echo=lambda s: None)).run()
    study = optuna.load_study(study_name="diffusion-lora", storage=open_storage(default_storage(store)))
    client = MlflowClient(store)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    rejected = [t for t in study.trials if t.user_attrs.get("tunelog.outcome") == "rejected"]
    diverged = [t for t in study.trials if t.user_attrs.get("tunelog.outcome") == "diverged"]
    assert done and rejected and diverged and len(study.trials) == 14  # seeded: AdamW8bit at a high LR diverges
    assert len(spec.search.constraints) == 7
    for t in done:
        run = client.get_run(t.user_attrs["tunelog.run_id"])
        assert len(client.get_metric_history(run.info.run_id, "loss")) >= 10  # parsed live from the tqdm lines
    for t in rejected:
        assert client.get_run(t.user_attrs["tunelog.run_id"]).data.tags["tunelog.reason"].split(":")[0] in {
            c.name for c in spec.search.constraints}
    for t in diverged:
        assert t.state == TrialState.FAIL
        assert client.get_run(t.user_attrs["tunelog.run_id"]).data.tags["tunelog.outcome"] == "diverged"
    assert summary.counts["diverged"] == len(diverged)
