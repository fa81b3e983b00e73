"""The command trainer over a script that behaves like a diffusion-LoRA trainer (tests/fixtures)."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from conftest import command_example as example
from conftest import signal_when_ready, subprocess_env
from tunelog.changelog import collect_and_build
from tunelog.errors import SpecError
from tunelog.spec import load_spec
from tunelog.sweep import Sweep, SweepOptions, default_storage, open_storage
from tunelog.tracking import Tracker
from tunelog.train import run_training


def test_metrics_artifacts_and_argv(tmp_path, store):
    # a made-up pair of GPUs (named so: the script never touches them) recorded as the run's devices
    spec = example(tmp_path).with_overrides({"trainer.env.CUDA_VISIBLE_DEVICES": "0,1"})
    run_id, result = run_training(spec, Tracker())
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert result.outcome == "ok" and run.info.status == "FINISHED"
    losses = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in losses] == list(range(1, 11))  # tqdm's 1/10 ... 10/10
    assert losses[-1].value < losses[0].value and result.metrics["loss"] == losses[-1].value
    assert "--network_dim" in run.data.params["trainer.rendered_argv"]
    assert "outputs/last.safetensors" in {a.path for a in client.list_artifacts(run_id, "outputs")}
    assert run.data.tags["tunelog.gpus"] == "2"  # the changelog's device-hours: 2 GPUs x wall time
    (entry,) = [e for e in collect_and_build(Tracker(), "diffusion-lora").entries if e.run_id == run_id]
    assert entry.gpus == 2 and entry.cost_h == pytest.approx(2 * entry.duration_s / 3600)


def test_cuda_out_of_memory_is_outcome_oom(tmp_path, store):
    run_id, result = run_training(example(tmp_path, vram_dim_limit=32), Tracker())
    assert result.outcome == "oom" and "CUDA out of memory" in result.reason
    assert MlflowClient(store).get_run(run_id).data.tags["tunelog.outcome"] == "oom"


def test_nan_loss_is_diverged(tmp_path, store):
    spec = example(tmp_path).with_overrides({"trainer.args.optimizer": "AdamW8bit", "train.learning_rate": 3e-4})
    _, result = run_training(spec, Tracker())
    assert result.outcome == "diverged" and "non-finite loss at step 3" in result.reason


def test_loss_nan_in_words_is_diverged_and_a_short_log_is_incomplete(tmp_path, store):
    _, said = run_training(example(tmp_path, say_nan_at=4), Tracker())
    assert said.outcome == "diverged" and "log says WARNING loss is nan at step 4" in said.reason
    assert all(v == v for v in said.metrics.values())  # no parsed value was NaN: the words decided
    spec = example(tmp_path, stop_after=3).with_overrides({"train.max_steps": 10})
    run_id, cut = run_training(spec, Tracker())
    assert cut.outcome == "incomplete" and cut.reason == "log ends at step 3 of train.max_steps=10"
    assert MlflowClient(store).get_run(run_id).data.tags["tunelog.outcome"] == "incomplete"


def test_unknown_placeholder_is_a_spec_error(tmp_path, store):
    spec = example(tmp_path)
    spec = spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"argv": ["{python}", "{nope.x}"]})})
    try:
        run_training(spec, Tracker())
    except SpecError as exc:
        assert "trainer.argv" in str(exc) and "nope.x" in str(exc)
    else:
        raise AssertionError("expected a SpecError")


def test_values_stay_one_argument_and_are_shell_quoted_inside_a_shell_script(tmp_path, store):
    from tunelog.trainers.command import render_argv

    hostile = "a b; touch pwned 'x'"
    spec = example(tmp_path).with_overrides({"trainer.args.optimizer": hostile})
    argv = render_argv(
        spec.model_copy(
            update={
                "trainer": spec.trainer.model_copy(
                    update={"argv": ["echo", "--optimizer_type", "{trainer.args.optimizer}"]}
                )
            }
        ),
        tmp_path,
    )
    assert argv == ["echo", "--optimizer_type", hostile]  # one item, as it is: no shell will read it
    shell = spec.model_copy(
        update={
            "trainer": spec.trainer.model_copy(
                update={"argv": ["bash", "-c", "printf %s {trainer.args.optimizer} > {output_dir}/seen.txt"]}
            )
        }
    )
    _, result = run_training(shell, Tracker())
    assert result.outcome == "ok" and not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    rendered = render_argv(shell, tmp_path)
    subprocess.run(rendered, check=True, cwd=tmp_path)
    assert (tmp_path / "seen.txt").read_text() == hostile  # bash read the value back as one quoted word


@pytest.mark.parametrize(
    "prefix",
    [
        ["bash", "-ec"],
        ["/usr/bin/env", "bash", "-c"],
        ["env", "LC_ALL=C", "bash", "-e", "-o", "pipefail", "-c"],
        ["sh", "-c"],
        ["bash", "-lc"],
    ],
)
def test_placeholders_in_any_shell_script_cannot_run_what_a_value_holds(tmp_path, prefix):
    """`$(...)`, backticks and `;` in a value (from --set, a sweep or someone else's spec) stay data in the shell."""
    from tunelog.trainers.command import render_argv

    hostile = "$(touch pwned1) `touch pwned2`; touch pwned3"
    spec = example(tmp_path).with_overrides({"trainer.args.optimizer": hostile})
    argv = [*prefix, "printf %s {trainer.args.optimizer} > seen.txt", "argv0", "{trainer.args.optimizer}"]
    rendered = render_argv(
        spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"argv": argv})}), tmp_path
    )
    assert rendered[-1] == hostile  # an argument after the script is data for the script ($1), as it is
    subprocess.run(rendered, check=True, cwd=tmp_path, timeout=60)
    assert (tmp_path / "seen.txt").read_text() == hostile and not list(tmp_path.glob("pwned*"))


def started(pid_file: Path) -> bool:
    return pid_file.exists() and bool(pid_file.read_text().strip())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"  # a zombie is gone, awaiting its reaper


def test_sigterm_to_tunelog_stops_the_script_and_kills_the_run(tmp_path, store):
    pid_file = tmp_path / "child.pid"
    spec = example(tmp_path, sleep=0.5, pid_file=pid_file)
    argv = [sys.executable, "-m", "tunelog.cli", "train", spec.source]
    # waits on state (the script's pid file), not on time
    child, code, _ = signal_when_ready(
        argv, subprocess_env(store), lambda: started(pid_file) and int(pid_file.read_text()), "the script's start"
    )
    assert code == 143
    assert not _alive(child), "the training script outlived tunelog"
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("diffusion-lora").experiment_id])
    assert runs[0].info.status == "KILLED"


def test_a_script_that_ignores_sigterm_and_leaves_a_grandchild_is_stopped_whole(tmp_path, store):
    """SIGTERM to tunelog while its script ignores SIGTERM and has started a grandchild: the script's whole
    process group is killed after the grace period, the run ends KILLED, nothing is left behind."""
    pids = tmp_path / "pids"
    script = f"trap '' TERM; sleep 600 & echo $$ $! > {pids}; while true; do echo step=1 loss=1.0; sleep 0.2; done"
    spec = example(tmp_path)
    spec = spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"argv": ["bash", "-c", script]})})
    path = tmp_path / "ignores.yaml"
    path.write_text(yaml.safe_dump(spec.resolved(root=tmp_path), sort_keys=False))
    argv = [sys.executable, "-m", "tunelog.cli", "train", path]
    pair, code, _ = signal_when_ready(
        argv, subprocess_env(store), lambda: started(pids) and pids.read_text().split(), "the script's start"
    )
    child, grandchild = map(int, pair)
    assert code == 143
    assert not _alive(child) and not _alive(grandchild), "the script or its child outlived tunelog"
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
            c.name for c in spec.search.constraints
        }
    for t in diverged:
        assert t.state == TrialState.FAIL
        assert client.get_run(t.user_attrs["tunelog.run_id"]).data.tags["tunelog.outcome"] == "diverged"
    assert summary.counts["diverged"] == len(diverged)


def test_second_objective_logs_the_pareto_front(tmp_path, store):
    """loss against wall time: the sweep run holds the trials no other feasible trial beats in both."""
    spec = example(tmp_path).with_overrides(
        {
            "search.n_trials": 8,
            "search.study": "pareto",
            "search.second_objective": {"metric": "train/seconds", "direction": "minimize"},
        }
    )
    summary = Sweep(spec, Tracker(), SweepOptions(echo=lambda s: None)).run()
    client = MlflowClient(store)
    import json

    front = json.loads(
        Path(client.download_artifacts(summary.sweep_run_id, "pareto_front.json", str(tmp_path))).read_text()
    )
    study = optuna.load_study(study_name="pareto", storage=open_storage(default_storage(store)))
    done = [(t.values[0], t.values[1]) for t in study.trials if t.state == TrialState.COMPLETE]
    on_front = [(row["loss"], row["train/seconds"]) for row in front]
    assert on_front and set(on_front) <= set(done)
    for point in done:  # on the front, or beaten in both by a point of it
        assert point in on_front or any(f[0] <= point[0] and f[1] <= point[1] for f in on_front)
    for f in on_front:  # nothing beats a front point in both
        assert not any(p != f and p[0] <= f[0] and p[1] <= f[1] for p in done)
    assert all(client.get_run(row["run_id"]).data.metrics["loss"] == row["loss"] for row in front)
    assert "plots/pareto_front.png" in {a.path for a in client.list_artifacts(summary.sweep_run_id, "plots")}


VAL_SCRIPT = """
import sys, time
lr = float(sys.argv[1])
for step in range(1, 6):
    print(f"step {step} train_loss={1.0 / step:.4f} val_loss={lr / step:.4f}", flush=True)
    time.sleep(0.05)
"""


def test_sweep_over_a_script_prunes_on_its_printed_val_loss(tmp_path, store):
    """The script prints a validation loss that is worse the higher the LR: the median pruner stops such
    trials once past the warmup, and their script with them."""
    script = tmp_path / "val.py"
    script.write_text(VAL_SCRIPT)
    (tmp_path / "train.txt").write_text("a\nb\n")
    raw = {
        "model": {"name": "my-script-model"},
        "data": {"train": "train.txt"},
        "trainer": {"type": "command", "argv": ["{python}", str(script), "{train.learning_rate}"]},
        "tracking": {"experiment": "val", "metric": "val_loss"},
        "train": {"learning_rate": 1.0},
        "search": {
            "study": "val",
            "sampler": "random",
            "seed": 0,
            "n_trials": 6,
            "pruner": {"type": "median", "startup_trials": 1},
            "params": {"train.learning_rate": {"type": "float", "min": 1.0, "max": 10.0}},
        },
    }
    path = tmp_path / "val.yaml"
    path.write_text(yaml.safe_dump(raw))
    Sweep(load_spec(path), Tracker(), SweepOptions(echo=lambda s: None)).run()
    study = optuna.load_study(study_name="val", storage=open_storage(default_storage(store)))
    first = study.trials[0]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert first.state == TrialState.COMPLETE and pruned
    client = MlflowClient(store)
    for t in pruned:
        assert t.params["train.learning_rate"] > first.params["train.learning_rate"]  # worse from step 1
        run = client.get_run(t.user_attrs["tunelog.run_id"])
        assert run.data.tags["tunelog.outcome"] == "pruned"
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) < 5  # stopped before its end
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            assert t.values[0] == pytest.approx(t.params["train.learning_rate"] / 5, rel=1e-3)
    # one param searched: the history is drawn, an importance chart of one bar at 100% is not
    sweep_run = client.get_run(study.user_attrs["tunelog.sweep_run_id"])
    plots = {a.path for a in client.list_artifacts(sweep_run.info.run_id, "plots")}
    assert plots == {"plots/optimization_history.png"}


def test_a_sweeps_console_gives_every_trial_a_line_in_the_studys_words(tmp_path, store):
    """One line per trial, rejected ones too, each with its reason; the failed trial's reason is the
    script's own last error line; the summary counts what the lines said."""
    from conftest import run_cli

    raw = yaml.safe_load((Path(__file__).parent.parent / "examples/diffusion_lora/spec.yaml").read_text())
    raw["trainer"]["argv"][1] = str(Path(__file__).parent / "fixtures/fake_diffusion_train.py")
    raw["data"]["train"] = str(Path(__file__).parent.parent / "examples/diffusion_lora/captions.txt")
    raw["trainer"]["argv"] += ["--steps_per_epoch", "2"]
    raw["search"] = {
        "study": "console",
        "n_trials": 3,
        "sampler": "random",
        "params": {
            "train.learning_rate": {"type": "categorical", "choices": [1.0e-4, 3.0e-4]},
            "trainer.args.epochs": {"type": "categorical", "choices": [1, "two"]},
        },
        "constraints": [{"name": "lr-cap", "reject": "train.learning_rate > 2e-4", "reason": "too high here"}],
    }
    raw["configs"] = {
        "good": {"overrides": {"train.learning_rate": 1.0e-4, "trainer.args.epochs": 1}},
        "eager": {"overrides": {"train.learning_rate": 3.0e-4, "trainer.args.epochs": 1}},
        "typo": {"overrides": {"train.learning_rate": 1.0e-4, "trainer.args.epochs": "two"}},
    }
    raw.pop("probe", None)
    path = tmp_path / "console.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    done = run_cli("sweep", path, "--force")
    lines = [line for line in done.stdout.splitlines() if line.startswith("trial ")]
    assert len(lines) == 3, done.stdout
    assert lines[0].startswith("trial 0/3: ok, loss ")
    assert lines[1].startswith("trial 1/3: rejected (lr-cap)")
    assert lines[2].startswith("trial 2/3: failed (exit code 2: ") and "invalid int value: 'two'" in lines[2]
    assert "1 complete, 0 pruned, 1 rejected, 1 failed" in done.stdout
    # the changelog's best configuration: what varies among the trials that trained, not every spec field
    # (the rejected trial holds only its sampled values, which made every other field look varied)
    story = run_cli("changelog", "--experiment", "diffusion-lora", "--no-log").stdout
    best = story.split("## Final best configuration")[1]
    rows = [line for line in best.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["trainer.args.epochs"], best
    assert "other params) | the same in every run" in best
    # a rerun says the failed trial counts as done; --retry-failed runs its params again, uncounted
    again = run_cli("sweep", path, "--force")
    assert "1 failed trial(s) (2) count as done: rerun with --retry-failed" in again.stdout, again.stdout
    retried = run_cli("sweep", path, "--force", "--retry-failed")
    assert "1 re-queued, 1 to go" in retried.stdout, retried.stdout
    (rerun,) = [line for line in retried.stdout.splitlines() if line.startswith("trial ")]
    assert rerun.startswith("trial 3/3: failed (exit code 2: ") and "invalid int value: 'two'" in rerun
    study = optuna.load_study(study_name="console", storage=open_storage(default_storage(store)))
    assert study.trials[3].user_attrs["tunelog.retried_from"] == 2 and study.trials[3].params == study.trials[2].params


def test_promote_registers_a_scripts_weights_and_refuses_a_run_that_kept_none(tmp_path, store):
    """A version must point at files that exist: the script's logged weights (`outputs/`), and a run that
    kept no weights is refused in one line, with nothing registered."""
    from conftest import run_cli

    spec = example(tmp_path)
    kept, _ = run_training(spec, Tracker())
    bare, _ = run_training(spec.with_overrides({"trainer.artifacts": ["*.log"]}), Tracker())
    refused = run_cli("promote", "--run", bare, "--name", "diffusion-lora")
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert f"run {bare}" in refused.stderr and "kept no adapter" in refused.stderr
    client = MlflowClient(store)
    assert not client.search_registered_models()  # nothing half-registered
    promoted = run_cli("promote", "--run", kept, "--name", "diffusion-lora")
    assert promoted.returncode == 0, promoted.stderr
    (version,) = client.search_model_versions("name = 'diffusion-lora'")
    assert version.source.endswith(f"{kept}/artifacts/outputs")
    assert client.list_artifacts(kept, "outputs")  # the folder the version points at holds the weights


KOHYA_LIKE = """
import sys
lr = float(sys.argv[1])
for step in range(1, 81):
    # a running loss whose first steps say only how a run started (higher LR: a worse start), then the same
    # curve for all, except that an LR above 5 goes wrong after step 50
    loss = (lr if step <= 3 else 0.0) + 1.0 / step + (1.0 if lr > 5 and step > 50 else 0.0)
    print(f"steps: {step * 100 // 80}%| {step}/80 [00:01<00:01, 9.9it/s, avr_loss={loss:.4f}]", flush=True)
"""


def test_the_pruner_waits_for_its_warmup_on_a_running_train_loss(tmp_path, store):
    """A kohya-style script reports a running loss from step 1: no trial is pruned before a quarter of its 80
    steps (the default warmup), and a trial that goes wrong later still is (red before: pruned at step 1)."""
    script = tmp_path / "kohya_like.py"
    script.write_text(KOHYA_LIKE)
    (tmp_path / "train.txt").write_text("a\nb\n")
    raw = {
        "model": {"name": "my-script-model"},
        "data": {"train": "train.txt"},
        "trainer": {"type": "command", "argv": ["{python}", str(script), "{train.learning_rate}"]},
        "tracking": {"experiment": "kohya", "metric": "avr_loss"},
        "train": {"learning_rate": 1.0, "max_steps": 80},
        "search": {
            "study": "kohya",
            "sampler": "random",
            "seed": 3,
            "n_trials": 6,
            "pruner": {"type": "median", "startup_trials": 1},
            "params": {"train.learning_rate": {"type": "float", "min": 1.0, "max": 10.0}},
        },
        "configs": {"calm": {"overrides": {"train.learning_rate": 1.5}}},  # trial 0: a baseline that goes right
    }
    path = tmp_path / "kohya.yaml"
    path.write_text(yaml.safe_dump(raw))
    Sweep(load_spec(path), Tracker(), SweepOptions(echo=lambda s: None)).run()
    study = optuna.load_study(study_name="kohya", storage=open_storage(default_storage(store)))
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    warmup = 80 // 4
    assert all(max(t.intermediate_values) >= warmup for t in pruned), [max(t.intermediate_values) for t in pruned]
    late = [t for t in study.trials if t.params["train.learning_rate"] > 5]
    assert late and all(t.state == TrialState.PRUNED and max(t.intermediate_values) > 50 for t in late)
    calm = [t for t in study.trials if t.params["train.learning_rate"] <= 5]
    assert all(t.state == TrialState.COMPLETE for t in calm)  # a worse start alone prunes nothing
