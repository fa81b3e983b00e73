"""sweep against a real MLflow store and a real Optuna study on SQLite, training the demo's tiny model."""

import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from conftest import REPO, ctrl_c_as_in_a_terminal, demo_raw, mlflow_server, run_cli, subprocess_env, write_spec
from tunelog.spec import load_spec
from tunelog.sweep import Sweep, SweepOptions, default_storage, open_storage
from tunelog.tracking import Tracker


def sweep_raw(tmp_path, search, **train):
    raw = demo_raw(**{"max_steps": 3, "eval_every": None, **train})
    raw["data"]["eval"] = None  # the objective below is the final training loss: no eval pass needed
    raw["tracking"]["metric"] = "train/final_loss"
    raw["search"] = {"study": "s", "seed": 0, **search}
    raw["configs"] = {}
    return raw


def run_sweep(path, **opts):
    return Sweep(load_spec(path), Tracker(), SweepOptions(echo=lambda s: None, **opts)).run()


def study_of(store, name="s"):
    return optuna.load_study(study_name=name, storage=open_storage(default_storage(store)))


def runs(store, **tags):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("test")
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items()) or ""
    return client.search_runs([exp.experiment_id], filter_string=query, max_results=1000)


# A search space shaped like a diffusion-LoRA sweep, with seven rules including a conditional one.
# The built-in trainer has no Prodigy optimizer: the sampled `optimizer` name maps onto train.optimizer
# (prodigy trains as adamw here); the rules still see the sampled name.
DIFFUSION = {
    "n_trials": 24,
    "params": {
        "train.learning_rate": {"type": "float", "min": 2e-5, "max": 4e-4, "log": True},
        "te_ratio": {"type": "float", "min": 0.1, "max": 1.0},
        "lora.r": {"type": "categorical", "choices": [64, 128, 256]},
        "alpha_ratio": {"type": "float", "min": 0.25, "max": 0.9},
        "optimizer": {"type": "categorical", "choices": ["adamw", "adamw8bit", "prodigy"]},
        "train.epochs": {"type": "categorical", "choices": [12, 16, 20]},
        "train.warmup_steps": {"type": "int", "min": 0, "max": 200, "step": 50},
        "train.grad_accum": {"type": "categorical", "choices": [1, 2, 4]},
    },
    "derived": {
        "lora.alpha": "lora.r * alpha_ratio",
        "text_encoder_lr": "train.learning_rate * te_ratio",
        "train.optimizer": "'adamw8bit' if optimizer == 'adamw8bit' else 'adamw'",
    },
    "constraints": [
        {
            "name": "8bit-high-lr",
            "reject": "train.learning_rate > 1.2e-4 and optimizer == 'adamw8bit'",
            "reason": "8-bit unstable at high LR",
        },
        {
            "name": "high-alpha-needs-long-training",
            "if": "alpha_ratio >= 0.75",
            "require": ["train.epochs >= 16", "train.warmup_steps >= 100"],
            "reason": "high alpha needs a long run",
        },
        {
            "name": "dim-256-needs-accumulation",
            "reject": "lora.r == 256 and train.grad_accum == 1",
            "reason": "dim 256 is noisy without accumulation",
        },
        {"name": "te-lr-cap", "reject": "text_encoder_lr > 1.5e-4", "reason": "text encoder LR too high"},
        {
            "name": "prodigy-lr",
            "reject": "optimizer == 'prodigy' and train.learning_rate < 5e-5",
            "reason": "prodigy adapts the LR upward only from a sane start",
        },
        {
            "name": "small-dim-short",
            "reject": "lora.r == 64 and train.epochs == 20",
            "reason": "dim 64 saturates before 20 epochs",
        },
        {
            "name": "long-warmup-short-run",
            "reject": "train.warmup_steps >= 150 and train.epochs == 12",
            "reason": "warmup too long for 12 epochs",
        },
    ],
}

RULES = {  # the same seven rules, written independently as Python for the check
    "8bit-high-lr": lambda p: p["train.learning_rate"] > 1.2e-4 and p["optimizer"] == "adamw8bit",
    "high-alpha-needs-long-training": lambda p: (
        p["alpha_ratio"] >= 0.75 and not (p["train.epochs"] >= 16 and p["train.warmup_steps"] >= 100)
    ),
    "dim-256-needs-accumulation": lambda p: p["lora.r"] == 256 and p["train.grad_accum"] == 1,
    "te-lr-cap": lambda p: p["train.learning_rate"] * p["te_ratio"] > 1.5e-4,
    "prodigy-lr": lambda p: p["optimizer"] == "prodigy" and p["train.learning_rate"] < 5e-5,
    "small-dim-short": lambda p: p["lora.r"] == 64 and p["train.epochs"] == 20,
    "long-warmup-short-run": lambda p: p["train.warmup_steps"] >= 150 and p["train.epochs"] == 12,
}


def test_diffusion_shaped_space_with_seven_rules(tmp_path, store):
    raw = sweep_raw(tmp_path, DIFFUSION, max_steps=2, warmup_ratio=None, schedule="cosine")
    raw["model"]["tiny"].update(hidden_size=32, intermediate_size=64)
    summary = run_sweep(write_spec(tmp_path / "diffusion.yaml", raw))
    study = study_of(store)
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    rejected = [t for t in study.trials if t.user_attrs.get("tunelog.outcome") == "rejected"]
    assert completed and rejected and len(study.trials) == 24
    for t in completed:
        broken = [name for name, rule in RULES.items() if rule(t.params)]
        assert not broken, (t.number, t.params, broken)
        assert set(t.constraints) == set(RULES) and all(v == 0 for v in t.constraints.values())
    for t in rejected:
        rule = t.user_attrs["tunelog.reason"].split(":")[0]
        assert RULES[rule](t.params), (rule, t.params)
        assert t.state == TrialState.PRUNED and t.constraints[rule] == 1.0
    child_reasons = {
        r.data.tags["tunelog.trial"]: r.data.tags["tunelog.reason"]
        for r in runs(store, **{"tunelog.outcome": "rejected"})
    }
    assert {str(t.number) for t in rejected} == set(child_reasons)
    assert all(reason.split(":")[0] in RULES for reason in child_reasons.values())
    assert summary.counts["rejected"] == len(rejected) and summary.counts["complete"] == len(completed)


def test_sweep_run_children_best_and_plots(tmp_path, store):
    search = {
        "n_trials": 5,
        "params": {
            "train.learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2, "log": True},
            "lora.r": {"type": "categorical", "choices": [4, 8]},
        },
    }
    raw = sweep_raw(tmp_path, search, max_steps=4)
    raw["configs"] = {
        "baseline": {"purpose": "the spec as written"},
        "small": {"overrides": {"lora.r": 4, "train.learning_rate": 2e-3}},
    }
    summary = run_sweep(write_spec(tmp_path / "s.yaml", raw))
    client = MlflowClient(store)
    sweep_runs = runs(store, **{"tunelog.kind": "sweep"})
    assert len(sweep_runs) == 1 and sweep_runs[0].info.status == "FINISHED"
    parent = sweep_runs[0]
    children = runs(store, **{"mlflow.parentRunId": parent.info.run_id})
    assert len(children) == 5 and all(c.data.tags["tunelog.kind"] == "trial" for c in children)
    study = study_of(store)
    assert study.trials[0].params["lora.r"] == 8 and study.trials[1].params == {
        "lora.r": 4,
        "train.learning_rate": 2e-3,
    }
    assert study.trials[1].user_attrs["tunelog.config"] == "small"  # named configs ran first
    best = [c for c in children if c.data.tags.get("tunelog.best") == "true"]
    assert len(best) == 1 and best[0].info.run_id == summary.best_run_id
    assert parent.data.tags["tunelog.best_run_id"] == summary.best_run_id
    assert parent.data.metrics["sweep/complete"] == 5 and parent.data.metrics["sweep/best_value"] == summary.best_value
    assert parent.data.metrics["tunelog/score"] == summary.best_value  # train/final_loss is minimized
    note = parent.data.tags["mlflow.note.content"]  # the sweep run's page: a leaderboard of its trials
    assert note.startswith("**Sweep s**: 5 complete") and note.count(f"`{summary.best_run_id}`") == 1
    assert "| `lora.r` | `train.learning_rate` | train/final_loss |" in note
    assert all(c.data.tags["mlflow.runName"].startswith(f"trial-{c.data.tags['tunelog.trial']} ") for c in children)
    assert any("lr=" in c.data.tags["mlflow.runName"] and "r=" in c.data.tags["mlflow.runName"] for c in children)
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/param_importances.png"} <= arts
    assert "param_importances.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    again = run_sweep(write_spec(tmp_path / "s.yaml", raw))  # same command again: nothing left to do
    assert again.sweep_run_id == parent.info.run_id and len(study_of(store).trials) == 5


def test_rejecting_everything_stops_with_a_clear_message(tmp_path, store):
    search = {
        "n_trials": 100,
        "max_consecutive_rejections": 6,
        "params": {"train.learning_rate": {"type": "float", "min": 1e-4, "max": 1e-3}},
        "constraints": [{"name": "nothing-fits", "reject": "train.learning_rate > 0", "reason": "always"}],
    }
    path = write_spec(tmp_path / "stuck.yaml", sweep_raw(tmp_path, search))
    proc = run_cli("sweep", str(path))
    assert proc.returncode == 2
    assert "rejected the last 6 configs in a row (most often: nothing-fits (6x))" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert runs(store, **{"tunelog.kind": "sweep"})[0].info.status == "FAILED"


def test_two_workers_share_one_study(tmp_path, store):
    """--workers 2 over the command trainer's test script (cheap trials): one study, the parent's --set in
    every worker's trials, the parent itself training none."""
    from test_sweep_shared import shared_spec

    path = shared_spec(tmp_path, sleep=0.0)
    argv = [sys.executable, "-m", "tunelog.cli", "sweep", path, "--workers", "2", "--set", "lora.dropout=0.25"]
    proc = subprocess.Popen(argv, env=subprocess_env(store), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    study = study_of(store, "shared")
    counted = [t for t in study.trials if t.user_attrs.get("tunelog.outcome") != "over_budget"]
    assert sorted(t.number for t in counted) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in counted)
    # each worker draws its own sequence (seed + its seat), not the same learning rates in step
    assert len({t.params["train.learning_rate"] for t in counted}) == 6
    owners = {t.user_attrs["tunelog.owner"].rpartition(":")[2] for t in counted}
    assert 1 <= len(owners) <= 2 and str(proc.pid) not in owners  # worker processes trained, not the parent
    client = MlflowClient(store)
    children = client.search_runs(
        [client.get_experiment_by_name("shared").experiment_id], "tags.`tunelog.kind` = 'trial'"
    )
    assert len(children) == 6 and len({c.data.tags["tunelog.trial"] for c in children}) == 6
    assert {c.data.params["lora.dropout"] for c in children} == {"0.25"}  # the parent's --set reached the workers


def wait_for_training_trial(store, number, proc, seconds=600):
    """The run id of trial `number` once it has logged a training loss; waits on state, not on time."""
    client, deadline = MlflowClient(store), time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        exp = client.get_experiment_by_name("test")
        for r in client.search_runs([exp.experiment_id]) if exp else []:
            if r.data.tags.get("tunelog.trial") == str(number) and client.get_metric_history(
                r.info.run_id, "train/loss"
            ):
                return r.info.run_id
        time.sleep(0.3)
    raise AssertionError(f"trial {number} never started training (sweep exit code {proc.poll()})")


def test_interrupted_trial_runs_again_on_resume(tmp_path, store):
    """Ctrl-C mid-trial loses no trial: the console says what happened and how to go on, the run says
    `interrupted`, and the same command resumes: the trial runs again with its params, not counted twice.
    (SIGKILLed workers: test_sweep_shared, test_distributed; SIGTERM: test_train, test_stages.)"""
    search = {
        "n_trials": 2,
        "sampler": "random",
        "params": {"train.learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2, "log": True}},
    }
    long_path = write_spec(tmp_path / "k.yaml", sweep_raw(tmp_path, search, max_steps=100_000))
    with open(tmp_path / "out", "w") as out_file, open(tmp_path / "err", "w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunelog.cli", "sweep", str(long_path)],
            env=subprocess_env(store),
            stdout=out_file,
            stderr=err_file,
            preexec_fn=ctrl_c_as_in_a_terminal,
        )
    try:
        victim = wait_for_training_trial(store, 0, proc)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    client = MlflowClient(store)
    assert proc.returncode == 130 and client.get_run(victim).info.status == "KILLED"
    assert "trial 0/2: interrupted" in out and "the same command resumes the study" in out, out
    assert err.strip().splitlines()[-1].startswith("interrupted: open runs closed KILLED (outcome interrupted)"), err
    assert client.get_run(victim).data.tags["tunelog.outcome"] == "interrupted"
    short_path = write_spec(tmp_path / "k.yaml", sweep_raw(tmp_path, search, max_steps=2))  # same space, short
    again = run_cli("sweep", str(short_path))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming study s: 0 finished, 1 re-queued, 2 to go" in again.stdout
    study = study_of(store)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[0].user_attrs["tunelog.outcome"] == "interrupted"
    assert study.trials[1].params == study.trials[0].params  # the interrupted config, run again
    assert client.get_run(victim).info.status == "KILLED"
    assert all(r.info.status != "RUNNING" for r in runs(store))


def test_a_worker_that_died_after_the_budget_looked_full_still_gets_its_trial_run(tmp_path, store):
    """The race CI met with three invocations: worker B's loop saw the budget full while counting worker
    A's RUNNING trial; A died just after. Before closing, B must notice the death and run the trial again
    (it used to see nothing running elsewhere and close one trial short)."""
    search = {
        "n_trials": 1,
        "sampler": "random",
        "params": {"train.learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2, "log": True}},
    }
    path = write_spec(tmp_path / "race.yaml", sweep_raw(tmp_path, search, max_steps=2))
    sweep = Sweep(load_spec(path), Tracker(), SweepOptions(echo=lambda s: None))
    study = sweep.study()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    trial = study.ask()  # worker A's trial, its params drawn; A (a finished process) is gone
    trial.suggest_float("train.learning_rate", 1e-3, 1e-2, log=True)
    trial.set_user_attr("tunelog.owner", f"{socket.gethostname()}:{dead.stdout.strip()}")
    parent = MlflowClient(store).create_run(MlflowClient(store).create_experiment("race")).info.run_id

    assert sweep._others_still_training(study, parent) == []
    study = study_of(store)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[0].user_attrs["tunelog.outcome"] == "interrupted"
    assert study.trials[1].params == study.trials[0].params


def test_refine_narrows_around_the_best(tmp_path, store):
    search = {
        "n_trials": 4,
        "sampler": "random",
        "params": {
            "train.learning_rate": {"type": "float", "min": 1e-4, "max": 1e-1, "log": True},
            "lora.r": {"type": "categorical", "choices": [2, 4, 8, 16]},
        },
    }
    path = write_spec(tmp_path / "r.yaml", sweep_raw(tmp_path, search))
    first = run_sweep(path)
    seen = [t.params for t in study_of(store).trials]
    refined = run_sweep(path, refine_from="s", top_k=2, n_trials=2)
    assert refined.study == "s-refined" and refined.narrowed
    new = study_of(store, "s-refined")
    lows = sorted(p["train.learning_rate"] for p in seen)
    for t in new.trials:
        assert t.params["lora.r"] in {p["lora.r"] for p in seen}
        assert 1e-4 <= t.params["train.learning_rate"] <= 1e-1
    proc = run_cli("analyze", "s")
    assert proc.returncode == 0 and "1. trial" in proc.stdout and "suggested next ranges" in proc.stdout
    assert first.best_trial is not None and lows


@pytest.mark.slow
@pytest.mark.slow
def test_mlflow_run_sweep_entry_point_through_a_server(tmp_path, store):
    """The headline path, `mlflow run . -e sweep` against `mlflow server` on 127.0.0.1 without
    --experiment-name: mlflow run puts the run in `Default`, and the sweep's trials follow it there (said
    once, nothing in the spec's experiment); no per-trial URL lines; the champion and the story are left
    behind; the adapters' files go through the server's artifact proxy."""
    search = {"n_trials": 2, "params": {"lora.r": {"type": "categorical", "choices": [4, 8]}}}
    path = write_spec(tmp_path / "m.yaml", sweep_raw(tmp_path, search))
    with mlflow_server(tmp_path / "server") as url:
        env = subprocess_env(url)
        env["TUNELOG_STORE_DIR"] = str(tmp_path / "mlruns")  # mlflow run works in the project folder: not there
        argv = ["mlflow", "run", str(REPO), "-e", "sweep", "--env-manager", "local", "-P", f"spec={path}"]
        argv += ["-P", "quick=false", "-P", f"changelog={tmp_path / 'CHANGELOG.md'}"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stderr.count("this run and its children go to experiment 'Default'") == 1  # said once
        assert "View run" not in proc.stdout + proc.stderr.replace("=== Run (ID", "")
        client = MlflowClient(url)
        assert client.get_experiment_by_name("test") is None  # nothing strayed into the spec's experiment
        (sweep,) = client.search_runs(["0"], "tags.`tunelog.kind` = 'sweep'")
        children = client.search_runs(["0"], f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'")
        assert sweep.info.status == "FINISHED" and len(children) == 2  # one tree, one experiment
        # mlflow#15713: a child under MLFLOW_RUN_ID can overwrite its parent; each keeps its own params here
        assert "search.lora.r" in sweep.data.params and "lora.r" not in sweep.data.params
        assert all("lora.r" in c.data.params and "search.lora.r" not in c.data.params for c in children)
        champion = client.get_model_version_by_alias("demo-lora", "champion")  # left behind: a champion
        assert champion.run_id == sweep.data.tags["tunelog.best_run_id"]
        assert (tmp_path / "CHANGELOG.md").read_text().startswith("# Changelog: Default")  # ...and the story
        assert client.get_experiment("0").tags["mlflow.note.content"].startswith("# Changelog: Default")
        assert client.get_experiment("0").tags["mlflow.experimentKind"] == "finetuning"  # the UI's training view
        journals = list((tmp_path / "mlruns").glob("optuna-*.journal"))
        assert len(journals) == 1  # one journal per server, in the store folder given
        assert list((tmp_path / "server" / "artifacts").rglob("adapter_model.safetensors"))  # behind the proxy


def test_best_trial_overrides_for_stages_from_sweep(tmp_path, store):
    """`stages --from-sweep`: the best trial's spec fields, sampled and derived; helper variables stay out."""
    from optuna.distributions import FloatDistribution

    from tunelog.sweep import best_trial_overrides

    search = {
        "study": "s",
        "params": {
            "train.learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2, "log": True},
            "alpha_ratio": {"type": "float", "min": 0.5, "max": 2.0},
        },
        "derived": {"lora.alpha": "lora.r * alpha_ratio"},
    }
    spec = load_spec(write_spec(tmp_path / "s.yaml", sweep_raw(tmp_path, search)))
    study = optuna.create_study(study_name="s", storage=open_storage(default_storage(store)))
    dists = {"train.learning_rate": FloatDistribution(1e-4, 1e-2, log=True), "alpha_ratio": FloatDistribution(0.5, 2.0)}
    for lr, ratio, loss in [(1e-3, 1.0, 2.0), (3e-3, 2.0, 1.5), (5e-3, 0.5, 1.8)]:
        study.add_trial(
            optuna.trial.create_trial(
                params={"train.learning_rate": lr, "alpha_ratio": ratio}, distributions=dists, values=[loss]
            )
        )
    assert best_trial_overrides(spec, "s") == {"train.learning_rate": 3e-3, "lora.alpha": spec.lora.r * 2.0}


def test_named_configs_run_as_written(tmp_path, store):
    """A sampled helper (alpha_ratio) must not re-derive the lora.alpha a preset sets: each preset's logged
    params equal its overrides, while sampled trials still get the derived value."""
    search = {
        "n_trials": 3,
        "sampler": "random",
        "params": {
            "lora.r": {"type": "categorical", "choices": [4, 8]},
            "alpha_ratio": {"type": "float", "min": 0.5, "max": 3.0},
        },
        "derived": {"lora.alpha": "lora.r * alpha_ratio"},
    }
    raw = sweep_raw(tmp_path, search)
    raw["configs"] = {
        "small": {"overrides": {"lora.r": 4, "lora.alpha": 8}},
        "wide": {"overrides": {"lora.r": 8, "lora.alpha": 32, "lora.dropout": 0.25}},
    }
    run_sweep(write_spec(tmp_path / "presets.yaml", raw))
    by_config = {r.data.tags.get("tunelog.config"): r for r in runs(store, **{"tunelog.kind": "trial"})}
    assert by_config["small"].data.params["lora.alpha"] == "8.0" and by_config["small"].data.params["lora.r"] == "4"
    assert float(by_config["small"].data.params["alpha_ratio"]) == pytest.approx(2.0)  # the helper that derives 8
    wide = by_config["wide"].data.params
    assert (wide["lora.alpha"], wide["lora.r"], wide["lora.dropout"]) == ("32.0", "8", "0.25")
    sampled = study_of(store).trials[2]
    free = by_config[None].data.params
    assert float(free["lora.alpha"]) == pytest.approx(sampled.params["lora.r"] * sampled.params["alpha_ratio"])


def test_a_new_best_takes_the_mark_from_the_old_one(store):
    """A resumed sweep's best can change: the old best's run says "false", the new one's "true", and the
    other trials' runs are not written at all (one write each was a twentieth of a cheap sweep)."""
    from tunelog.sweep.analysis import _mark_best

    tracker = Tracker()
    ids = []
    for name in ("old", "new", "other"):
        with tracker.run("exp", run_name=name) as run:
            ids.append(run.run_id)
    old, new, other = ids
    _mark_best(tracker, None, old)
    _mark_best(tracker, old, new)
    tags = {rid: MlflowClient(store).get_run(rid).data.tags.get("tunelog.best") for rid in ids}
    assert tags == {old: "false", new: "true", other: None}
