"""Hostile and careless input: one line, a non-zero exit, no traceback, nothing written to the store.

Each case runs the real `tunelog` command in this process (click's main, as the console script
does) against a real SQLite store, and checks what a user would see.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml
from mlflow import MlflowClient

from conftest import REPO, demo_raw, subprocess_env, write_spec
from tunelog.cli import main


def tunelog(capsys, *argv):
    """Exit code, stdout and stderr of `tunelog ARGV`."""
    capsys.readouterr()
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def store_is_empty(uri):
    client = MlflowClient(uri)
    experiments = client.search_experiments()
    return not client.search_runs([e.experiment_id for e in experiments]) if experiments else True


def assert_refused(capsys, store, argv, *needles, code=2):
    got, out, err = tunelog(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("lint warning")]
    assert got == code, (got, out, err)
    assert len(lines) == 1 and "Traceback" not in err + out, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert store_is_empty(store)
    return lines[0]


def spec_with(tmp_path, name="s.yaml", **sections):
    raw = demo_raw()
    raw.update(sections)
    return write_spec(tmp_path / name, raw)


# --- 1. expressions --------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, needle",
    [
        ("'a' * 10 ** 10 == 'b'", "repetition of 1 items x 10,000,000,000 refused"),
        ("[1] * 10 ** 9 == [2]", "repetition of 1 items x 1,000,000,000 refused"),
        ("+".join(["1"] * 100_000) + " > 0", "refused; accepted: at most 10,000"),
        ("+".join(["1"] * 3_000) + " > 0", "nested more than 100 deep refused"),
        ("(9 ** 999) ** 999 > 1", "power with a result over 4096 bits refused"),
        ("'%999999999d' % 1 == 'x'", "string formatting with % is not allowed"),
        ("__import__('os').system('true')", "unknown function"),
        ("learning_rate.__class__ == 1", "unknown name(s) learning_rate.__class__"),
        ("(lambda: 1) == 1", "Lambda is not allowed"),
        ("[x for x in [1]] == [1]", "ListComp is not allowed"),
    ],
)
def test_rule_attacks_are_one_line_errors(tmp_path, store, capsys, expr, needle):
    path = spec_with(tmp_path, rules=[{"name": "evil", "reject": expr}])
    line = assert_refused(capsys, store, ["lint", path], needle)
    assert "evil" in line or "rules" in line  # the rule is named


# --- 2. spec files -------------------------------------------------------------------


def test_non_utf8_spec(tmp_path, store, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model:\n  name: bokm\xe5l\n".encode("latin-1"))
    assert_refused(capsys, store, ["train", path], "not UTF-8", "latin1.yaml")


def test_yaml_alias_bomb(tmp_path, store, capsys):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert_refused(capsys, store, ["lint", path], "expands to more than 100,000 values")


def test_fifty_megabyte_spec(tmp_path, store, capsys):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.truncate(50 * 1024 * 1024)
    assert_refused(capsys, store, ["sweep", path], "52,428,800 bytes refused")


def test_spec_that_is_not_a_mapping(tmp_path, store, capsys):
    path = tmp_path / "list.yaml"
    path.write_text("- model\n- data\n")
    assert_refused(capsys, store, ["train", path], "expected a mapping of sections")


SEARCH = {"params": {"train.learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2, "log": True}}}


def test_derived_cycle_is_refused_before_any_trial(tmp_path, store, capsys):
    search = {**SEARCH, "derived": {"lora.alpha": "lora.dropout * 2", "lora.dropout": "lora.alpha / 2"}}
    path = spec_with(tmp_path, search=search)
    assert_refused(capsys, store, ["sweep", path], "cycle: lora.alpha -> lora.dropout -> lora.alpha")


@pytest.mark.parametrize(
    "where, section",
    [
        ("rules[0] (typo)", {"rules": [{"name": "typo", "reject": "learnig_rate > 1e-3"}]}),
        (
            "search.constraints[0] (typo)",
            {"search": {**SEARCH, "constraints": [{"name": "typo", "reject": "learnig_rate > 1e-3"}]}},
        ),
        ("search.derived.lora.alpha", {"search": {**SEARCH, "derived": {"lora.alpha": "learnig_rate * 1e4"}}}),
    ],
)
def test_unknown_names_are_refused_at_load(tmp_path, store, capsys, where, section):
    line = assert_refused(
        capsys,
        store,
        ["sweep", spec_with(tmp_path, **section)],
        where,
        "unknown name(s) learnig_rate",
        "names in scope:",
    )
    assert "learning_rate" in line.split("names in scope:")[1]


# --- 3. the command trainer leaves no folder behind ---------------------------------------


def test_command_sweep_leaves_no_output_folder(tmp_path, store, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    raw = yaml.safe_load((REPO / "examples/diffusion_lora/spec.yaml").read_text())
    raw["trainer"]["argv"][1] = str(REPO / "tests/fixtures/fake_diffusion_train.py")
    raw["data"]["train"] = str(REPO / "examples/diffusion_lora/captions.txt")
    raw["configs"] = {}
    code, out, err = tunelog(capsys, "sweep", write_spec(tmp_path / "cmd.yaml", raw), "--n-trials", 8)
    assert code == 0, err
    assert out.count(": ok, loss ") >= 2, out  # trials that ran the script and wrote weights
    assert not list((tmp_path / "tmp").glob("tunelog-cmd-*"))


# --- 4. a study remembers its search space -----------------------------------------------


def small_sweep(tmp_path, **search):
    raw = demo_raw(max_steps=2, eval_every=None)
    raw["data"]["eval"] = None
    raw["tracking"]["metric"] = "train/final_loss"
    raw["configs"] = {}
    raw["search"] = {"study": "s", "sampler": "random", **SEARCH, **search}
    return write_spec(tmp_path / "sweep.yaml", raw)


def sweep_runs(store):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("test")
    return client.search_runs([exp.experiment_id], "tags.`tunelog.kind` = 'sweep'")


def test_another_space_under_the_same_study_name(tmp_path, store, capsys):
    assert tunelog(capsys, "sweep", small_sweep(tmp_path), "--n-trials", 1)[0] == 0
    wider = small_sweep(tmp_path, params={"lora.r": {"type": "categorical", "choices": [4, 8]}})
    code, out, err = tunelog(capsys, "sweep", wider, "--n-trials", 2)
    errors = [line for line in err.splitlines() if line.strip() and not line.startswith("lint warning")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert "started with another search space" in err and "--study NEW" in err and "--force-resume" in err
    assert len(MlflowClient(store).search_runs([sweep_runs(store)[0].info.experiment_id])) == 2  # nothing new
    assert tunelog(capsys, "sweep", wider, "--n-trials", 2, "--force-resume")[0] == 0


# --- 5. resuming with another budget; models that cannot be had; runs left RUNNING ------------


def test_resume_with_a_larger_budget(tmp_path, store, capsys):
    path = small_sweep(tmp_path)
    assert tunelog(capsys, "sweep", path, "--n-trials", 1)[0] == 0
    code, out, err = tunelog(capsys, "sweep", path, "--n-trials", 2)
    assert code == 0, err
    assert "resuming study s: 1 finished, 0 re-queued, 1 to go" in out
    (run,) = sweep_runs(store)
    assert run.info.status == "FINISHED" and run.data.tags["tunelog.n_trials"] == "2"
    assert run.data.metrics["sweep/complete"] == 2


def test_model_missing_offline_is_one_line_before_any_run(tmp_path, store, capsys):
    raw = demo_raw()
    raw["model"] = {"name": "no-such-org/no-such-model"}
    path = write_spec(tmp_path / "hub.yaml", raw)
    assert_refused(capsys, store, ["train", path], "no-such-org/no-such-model", "HF_HUB_OFFLINE", "fix:")


def test_model_with_the_hub_out_of_reach(tmp_path, store):
    raw = demo_raw()
    raw["model"] = {"name": "no-such-org/no-such-model"}
    path = write_spec(tmp_path / "hub.yaml", raw)
    env = {**subprocess_env(store), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens
    proc = subprocess.run(
        [sys.executable, "-m", "tunelog.cli", "train", str(path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "hub is out of reach" in proc.stderr and "no-such-org/no-such-model" in proc.stderr
    assert store_is_empty(store)


def test_gc_closes_runs_whose_process_is_gone(store, capsys):
    client = MlflowClient(store)
    exp = client.create_experiment("left")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    orphan = client.create_run(exp, tags={"tunelog.owner": f"{host}:{dead.pid}"}, run_name="orphan").info.run_id
    alive = client.create_run(exp, tags={"tunelog.owner": f"{host}:{os.getpid()}"}, run_name="alive").info.run_id
    time.sleep(0.01)
    code, out, _ = tunelog(capsys, "gc", "--older-than", "0s")
    assert code == 0 and f"would close {orphan}" in out and alive not in out
    assert client.get_run(orphan).info.status == "RUNNING"  # a dry run by default
    code, out, _ = tunelog(capsys, "gc", "--older-than", "0s", "--yes")
    closed = client.get_run(orphan)
    assert code == 0 and closed.info.status == "KILLED" and "is gone" in closed.data.tags["tunelog.reason"]
    assert client.get_run(alive).info.status == "RUNNING"
    code, out, _ = tunelog(capsys, "gc", "--older-than", "30m", "--yes")
    assert "0 stale run(s)" in out  # nothing else to close; the live run is not touched however old


# --- secrets and drivers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://user:s3cr3t@db:5432/optuna", "postgresql://user:***@db:5432/optuna"),
        ("postgresql+psycopg2://u:s3cr3t@h/d", "postgresql+psycopg2://u:***@h/d"),
        ("https://host/api?token=s3cr3t&page=2", "https://host/api?token=***&page=2"),
        ("sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db"),
        ("postgresql://user@db/optuna", "postgresql://user@db/optuna"),
    ],
)
def test_urls_lose_their_secrets(url, shown):
    from tunelog.util.redact import redact_url

    assert redact_url(url) == shown


def test_unusable_storage_url_is_one_line_without_its_password(tmp_path, store, capsys):
    url = "postgresql://tunelog:s3cr3t@127.0.0.1:9/optuna"  # nothing listens on port 9
    code, out, err = tunelog(capsys, "sweep", small_sweep(tmp_path), "--storage", url)
    errors = [line for line in err.splitlines() if line.strip() and not line.startswith("lint warning")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err
    assert "s3cr3t" not in err + out and "tunelog:***@127.0.0.1" in errors[0]
    assert "tunelog[postgres]" in errors[0] or "cannot open the study storage" in errors[0]
    assert store_is_empty(store)


# --- issue 26 --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["[1, 2", "a: b: c", "!!python/object:os.system x"])
def test_a_set_value_that_is_not_yaml_is_one_line(tmp_path, store, capsys, value):
    item = f"train.learning_rate={value}"
    line = assert_refused(capsys, store, ["train", spec_with(tmp_path), "--set", item], "--set", "is not YAML")
    assert item in line


def _cut_in_half(path):
    import hashlib
    import sqlite3

    with sqlite3.connect(path) as con:  # the WAL folded in: the file is the whole database
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_store_cut_in_half_is_one_line_naming_it_and_nothing_is_written(imported, store, capsys, tmp_path):
    import hashlib
    from pathlib import Path

    db = Path(store.removeprefix("sqlite:///"))
    digest = _cut_in_half(db)
    beside = set(db.parent.iterdir())
    for argv in (
        ["changelog", "--experiment", "speech", "--no-log"],
        ["promote", "--experiment", "speech"],
        ["gc", "--yes"],
        [
            "sweep",
            spec_with(
                tmp_path,
                search={"n_trials": 1, "params": {"train.learning_rate": {"type": "float", "min": 1e-4, "max": 1e-3}}},
            ),
        ],
    ):
        code, out, err = tunelog(capsys, *argv)
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("lint warning")]
        assert code == 1 and len(lines) == 1 and "Traceback" not in err + out, (argv, err)
        assert f"the MLflow store {db} is damaged (cut short" in lines[0]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest and set(db.parent.iterdir()) == beside


def test_a_damaged_study_journal_or_database_is_one_line_offering_a_new_study(tmp_path, store, capsys):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "study.journal"
    study = optuna.create_study(
        study_name="s", storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    )
    study.set_user_attr("a", 1)
    study.set_user_attr("b", 2)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b'{"op_code": 2, \x00garbage\n' + b"".join(lines[1:]))  # a line torn mid-file
    spec = spec_with(
        tmp_path, search={"n_trials": 1, "params": {"train.learning_rate": {"type": "float", "min": 1e-4, "max": 1e-3}}}
    )
    line = assert_refused(
        capsys, store, ["sweep", spec, "--storage", journal], f"study journal {journal} is damaged", code=1
    )
    assert "--study NEW" in line
    database = tmp_path / "study.db"
    database.write_bytes(b"not a database at all" * 100)  # overwritten
    line = assert_refused(
        capsys, store, ["sweep", spec, "--storage", f"sqlite:///{database}"], "study database is damaged", code=1
    )
    assert "--study NEW" in line


def test_three_sweeps_started_together_on_a_store_that_does_not_exist_yet(tmp_path):
    """Default store and study storage (nothing in MLFLOW_TRACKING_URI): MLflow makes the store's tables on
    first use, and three processes raced to it ("table latest_metrics already exists")."""
    from conftest import command_example

    command_example(tmp_path)  # writes tmp_path/spec.yaml
    raw = yaml.safe_load((tmp_path / "spec.yaml").read_text())
    raw["search"]["n_trials"] = 5
    raw["configs"] = {
        "first": {"overrides": {"train.learning_rate": 1.0e-4}},
        "second": {"overrides": {"train.learning_rate": 2.0e-4}},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {k: v for k, v in subprocess_env("unused").items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-m", "tunelog.cli", "sweep", "spec.yaml"]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(3)
    ]
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert not any("locked" in out or "Traceback" in out for out in outputs), outputs
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert sorted(r.data.tags["tunelog.kind"] for r in runs) == ["sweep"] + ["trial"] * 5
    assert all(r.info.status != "RUNNING" for r in runs)
    trials = [r for r in runs if r.data.tags["tunelog.kind"] == "trial"]
    configs = sorted(r.data.tags.get("tunelog.config") or "" for r in trials)
    assert configs.count("first") == configs.count("second") == 1
    assert len({r.data.params["train.learning_rate"] for r in trials}) == 5  # distinct trials


def test_a_disk_that_fills_mid_run_is_one_line_and_the_run_closed_failed(tmp_path, empty_store_file):
    """The store on a 2 MB tmpfs (mounting one needs root; skipped elsewhere): training fills it. tunelog
    gives back the space it keeps in reserve beside the store, closes the run FAILED and says so in one line."""
    import shutil

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode()[:200]}")
    try:
        shutil.copy(empty_store_file, disk / "mlflow.db")
        uri = f"sqlite:///{disk / 'mlflow.db'}"
        spec = write_spec(tmp_path / "long.yaml", demo_raw(max_steps=400, eval_every=None))
        proc = subprocess.run(
            [sys.executable, "-m", "tunelog.cli", "train", str(spec)],
            env=subprocess_env(uri),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert f"the disk holding {disk / 'mlflow.db'} is full" in last and "closed FAILED" in last
        (run,) = MlflowClient(uri).search_runs(["0", "1"])
        assert run.info.status == "FAILED" and run.data.tags["tunelog.outcome"] == "failed"
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
