"""import on a hostile tree: files symlinked from outside it, configs built to exhaust a parser, metric names MLflow
refuses. Each costs one warning for its folder; the other folders import; nothing outside the tree is read; no run is
left RUNNING."""

import json
import sqlite3

import pytest
from mlflow import MlflowClient

from conftest import run_cli
from tunelog import tracking as t
from tunelog.importer import import_tree
from tunelog.tracking import Tracker

LOG = "step=100 loss=2.0 val_loss=2.1\nstep=200 loss=1.5 val_loss=1.6\n"


def _run(folder, config=None, log=LOG, name="args.json"):
    folder.mkdir(parents=True)
    (folder / name).write_text(config if config is not None else json.dumps({"lr": 0.001}))
    (folder / "train.log").write_text(log)
    return folder


def test_a_file_symlinked_from_outside_the_tree_is_never_read(tmp_path, store):
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "id_rsa").write_text("SECRET-KEY-MATERIAL")
    (outside / "stolen.log").write_text("step=1 loss=SECRET\n")
    tree = tmp_path / "runs"
    ok = _run(tree / "a_ok")
    (ok / "notes.md").symlink_to(outside / "id_rsa")
    linked = tree / "b_linked_log"
    linked.mkdir()
    (linked / "args.json").write_text(json.dumps({"lr": 0.002}))
    (linked / "train.log").symlink_to(outside / "stolen.log")
    (tree / "c_linked_folder").symlink_to(outside, target_is_directory=True)
    inside = _run(tree / "d_inside_link")
    (inside / "notes.md").symlink_to(ok / "args.json")  # a link within the tree is fine
    report = import_tree(tree, Tracker(), "hostile", metric="val_loss")
    assert sorted(report.imported) == ["a_ok", "d_inside_link"]
    assert "a_ok: notes.md: a symlink to outside the imported tree, not read" in report.warnings
    assert any(w.startswith("b_linked_log: train.log: a symlink to outside") for w in report.warnings)
    runs = {r.name: r for r in Tracker().all_runs("hostile")}
    assert t.TAG_NOTE not in runs["a_ok"].tags and runs["d_inside_link"].tags[t.TAG_NOTE] == '{"lr": 0.001}'
    db = store.removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert b"SECRET" not in open(db, "rb").read()


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize(
    "name, config",
    [
        ("config.yaml", BOMB),  # a billion laughs: 9**9 values once aliases are copied out
        ("config.yaml", "- " * 100_000 + "x\n"),  # 100,000 levels of block sequences
        ("config.yaml", "[" * 100_000 + "]" * 100_000),
        ("args.json", "[" * 100_000 + "]" * 100_000),
        ("config.toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n"),
    ],
    ids=["alias-bomb", "yaml-deep-block", "yaml-deep-flow", "json-deep", "toml-deep"],
)
def test_a_config_built_to_exhaust_the_parser_is_one_warning(tmp_path, store, name, config):
    tree = tmp_path / "runs"
    _run(tree / "a_good")
    _run(tree / "b_bomb", config=config, name=name)
    _run(tree / "c_good")
    report = import_tree(tree, Tracker(), "bombs", metric="val_loss")
    assert report.imported == ["a_good", "c_good"]
    assert len(report.warnings) == 1 and report.warnings[0].startswith(f"b_bomb: skipped: {name}")
    assert len(report.warnings[0]) < 400


def test_a_metric_name_mlflow_refuses_is_renamed_with_a_warning(tmp_path, store):
    tree = tmp_path / "runs"
    _run(tree / "slashes", log="step=1 train//loss=2.0\nstep=2 train//loss=1.0\n")
    proc = run_cli("import", tree, "--experiment", "names", "--metric", "train/loss")
    assert proc.returncode == 0, proc.stderr
    assert "warning: slashes: name 'train//loss' refused by MLflow, renamed to 'train/loss'" in proc.stderr
    (run,) = Tracker().all_runs("names")
    assert run.status == "FINISHED" and run.metrics["train/loss"] == 1.0


def test_a_run_the_store_refuses_is_closed_failed_never_left_running(store):
    tracker = Tracker()
    with pytest.raises(Exception, match="train//loss"):
        tracker.create_finished_run("refused", "bad", 1000, 2000, "FINISHED", {}, {}, [("train//loss", 1.0, 1000, 1)])
    (run,) = MlflowClient().search_runs([tracker.experiment_id("refused")])
    assert run.info.status == "FAILED"
