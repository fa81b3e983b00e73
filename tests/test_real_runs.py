"""`import` on real disks: the 47 run folders real training runs left in ../shared/real-runs (30 public
repositories), read in place, never copied here. Every expectation is computed in this file from the
raw files (manifest.json, trainer_state.json, *_results.json, metrics.csv, hparams.yaml), none typed in.
"""

import json
import math
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tunelog.changelog import build, to_markdown
from tunelog.importer import import_tree
from tunelog.tracking import Tracker

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-runs"
TREE = REAL / "tree"
pytestmark = pytest.mark.skipif(
    not (REAL / "manifest.json").is_file(),
    reason=f"{REAL} is absent: the real run folders are read in place beside the project, never copied into it",
)
PROJECT = "Nicolassalvan__mti881-projet2"
RESULTS = ("all_results.json", "eval_results.json", "train_results.json", "test_results.json", "predict_results.json")


class _Loader(yaml.SafeLoader):
    """hparams.yaml as data: Lightning dumps objects with python tags (`!!python/object:...`)."""


_Loader.add_multi_constructor(
    "tag:yaml.org,2002:python/",
    lambda loader, suffix, node: (
        loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.MappingNode)
        else loader.construct_sequence(node, deep=True)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_scalar(node)
    ),
)


def manifest() -> list[dict]:
    return json.loads((REAL / "manifest.json").read_text())


@pytest.fixture(scope="module")
def wild(tmp_path_factory):
    """The whole tree imported once into a fresh store: (tracker, report, runs by name)."""
    folder = tmp_path_factory.mktemp("wild")
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}")
    report = import_tree(TREE, tracker, "wild")
    return tracker, report, {r.name: r for r in tracker.all_runs("wild")}


def test_every_real_run_folder_is_one_run_named_by_its_path_and_nothing_else_is(wild):
    _, report, runs = wild
    expected = {entry["folder"] for entry in manifest()}
    assert set(runs) == expected, (sorted(set(runs) - expected), sorted(expected - set(runs)))
    assert not report.not_runs and sorted(report.imported) == sorted(expected)
    for name, run in runs.items():  # a run's project is its repository's folder
        assert run.tags["tunelog.project"] == name.split("/", 1)[0]


def test_importing_the_tree_again_adds_nothing(wild):
    tracker, _, runs = wild
    again = import_tree(TREE, tracker, "wild")
    assert again.imported == [] and sorted(again.skipped) == sorted(runs)
    assert len(tracker.all_runs("wild")) == len(runs)


# --- what a Hugging Face Trainer folder says ------------------------------------------------------------


def _state(folder: Path) -> tuple[Path, dict] | None:
    """The folder's trainer_state.json, or its newest checkpoint's where that went further."""
    candidates = [folder / "trainer_state.json"]
    checkpoints = sorted(
        (p for p in folder.glob("checkpoint-*") if p.name.split("-")[1].isdigit()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    candidates += [p / "trainer_state.json" for p in reversed(checkpoints) if (p / "trainer_state.json").is_file()][:1]
    found = [(p, json.loads(p.read_text())) for p in candidates if p.is_file()]
    return max(found, key=lambda item: item[1].get("global_step") or 0) if found else None


def _hf_name(key: str, summary: bool = False) -> str:
    for split in ("eval", "test", "predict"):
        if key.startswith(split + "_"):
            return f"{split}/{key[len(split) + 1 :]}"
    if summary and key == "train_loss":
        return "train/mean_loss"
    if key.startswith("train_"):
        return f"train/{key[6:]}"
    return {"learning_rate": "train/lr"}.get(key, f"train/{key}")


def _hf_series(state: dict) -> dict[str, dict[int, float]]:
    series: dict[str, dict[int, float]] = {}
    for entry in state.get("log_history", []):
        if "step" not in entry or "train_runtime" in entry:
            continue
        is_eval = any(k.startswith("eval_") for k in entry)
        for key, value in entry.items():
            if key in ("step", "total_flos") or (key == "epoch" and is_eval) or isinstance(value, (str, bool)):
                continue
            series.setdefault(_hf_name(key), {})[int(entry["step"])] = float(value)
    return series


def _history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)


def hf_folders():
    for entry in manifest():
        folder = TREE / entry["folder"]
        if _state(folder) is not None or any((folder / name).is_file() for name in RESULTS):
            yield entry["folder"], folder


def test_hf_trainer_runs_hold_every_series_point_their_trainer_state_logged(wild):
    tracker, _, runs = wild
    client, checked = MlflowClient(tracker.uri), 0
    for name, folder in hf_folders():
        state = _state(folder)
        if state is None:
            continue
        for key, points in _hf_series(state[1]).items():
            stored = _history(client, runs[name].run_id, key)
            for step, value in points.items():
                assert step in stored and _same(stored[step], value), (name, key, step, value, stored.get(step))
            extra = set(stored) - set(points)  # at most the final result, one step past the series
            assert len(extra) <= 1 and all(s > max(points) for s in extra), (name, key, extra)
            checked += len(points)
    assert checked > 10_000  # the corpus's trainer states hold tens of thousands of points


def test_hf_trainer_runs_carry_their_results_params_and_outcome(wild):
    _, _, runs = wild
    for name, folder in hf_folders():
        run = runs[name]
        finals: dict[str, float] = {}
        for file in RESULTS:  # all_results.json first: it wins a key two files share
            if (folder / file).is_file():
                for key, value in json.loads((folder / file).read_text()).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        finals.setdefault(_hf_name(key, summary=True), float(value))
        for key, value in finals.items():
            assert _same(run.metrics[key], value), (name, key, value, run.metrics.get(key))
        state = _state(folder)
        if state is None:
            continue
        global_step, max_steps = state[1].get("global_step") or 0, state[1].get("max_steps")
        if max_steps:
            assert run.params["train.max_steps"] == str(max_steps), name
        expected = "incomplete" if max_steps and global_step < 0.9 * max_steps else "ok"
        assert run.tags["tunelog.outcome"] == expected, (name, global_step, max_steps, run.tags.get("tunelog.reason"))
        runtime = finals.get("train/runtime")
        if runtime and run.tags["tunelog.time_source"] != "log":  # its own duration, not the files' copy time
            assert (run.end_ms - run.start_ms) == pytest.approx(runtime * 1000, abs=1), name


def test_a_checkpoint_is_never_a_run_and_only_checkpoints_make_one_run(wild):
    _, _, runs = wild
    assert not any("checkpoint-" in name.rsplit("/", 1)[-1] for name in runs)
    only_checkpoints = [
        e["folder"]
        for e in manifest()
        if all("/" in f["path"] and f["path"].split("/")[-2].startswith("checkpoint-") for f in e["files"])
    ]
    assert only_checkpoints  # subro608, SeanGormann, thititj, ijinyu1113: their runs are there, once each
    for name in only_checkpoints:
        newest = _state(TREE / name)
        assert runs[name].tags["tunelog.checkpoints"] and newest is not None
        assert runs[name].params["train.max_steps"] == str(newest[1]["max_steps"])


# --- Lightning's CSVLogger ---------------------------------------------------------------------------------


def lightning_folders():
    for entry in manifest():
        folder = TREE / entry["folder"]
        if (folder / "metrics.csv").is_file() and (folder / "hparams.yaml").is_file():
            yield entry["folder"], folder


def test_every_lightning_version_is_a_run_with_every_cell_its_metrics_csv_holds(wild):
    import csv

    tracker, _, runs = wild
    client = MlflowClient(tracker.uri)
    versions = list(lightning_folders())
    assert len(versions) == 12  # 8 versions of one project, 4 projects with one
    for name, folder in versions:
        run = runs[name]
        rows = list(csv.DictReader((folder / "metrics.csv").open()))
        cells: dict[str, list[tuple[int, float]]] = {}
        for i, row in enumerate(rows):
            step = int(float(row["step"])) if row.get("step") else i
            for key, cell in row.items():
                if key != "step" and cell not in ("", None):
                    cells.setdefault(key, []).append((step, float(cell)))
        for key, points in cells.items():  # a value repeated at its step (an epoch column) is one point, as in MLflow
            stored = sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, key))
            expected = sorted(set(points))
            assert len(stored) == len(expected), (name, key)
            assert all(s == e[0] and _same(v, e[1]) for (s, v), e in zip(stored, expected)), (name, key)
        hparams = yaml.load((folder / "hparams.yaml").read_text(), Loader=_Loader) or {}  # noqa: S506 (safe subclass)
        for key, value in hparams.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert float(run.params[key]) == pytest.approx(float(value)), (name, key)
        epochs = hparams.get("num_epochs") or hparams.get("max_epochs")
        done = max(int(float(r["epoch"])) for r in rows if r.get("epoch")) + 1  # Lightning counts from 0
        expected = "incomplete" if epochs and done < 0.9 * epochs else "ok"
        assert run.tags["tunelog.outcome"] == expected, (name, done, epochs, run.tags.get("tunelog.reason"))


# --- the slips seen in that corpus ---------------------------------------------------------------------------


def test_a_plain_text_line_in_a_jsonl_costs_that_line_not_the_folder(wild):
    _, report, runs = wild
    name = "liraneliav__NLP_lab-Text-Simplification/results"
    bad = [
        n
        for n, line in enumerate((TREE / name / "test_log.jsonl").read_text().splitlines(), 1)
        if line.strip() and not line.strip().startswith("{")
    ]
    assert bad and name in runs and runs[name].params.get("train.max_steps")  # its trainer_state was read
    assert any(name in w and f"line {bad[0]} is not JSON" in w for w in report.warnings)


def test_a_traceback_early_in_a_log_does_not_fail_a_run_whose_trainer_reached_max_steps(wild):
    _, _, runs = wild
    logs = list((TREE / PROJECT).rglob("hyperparam_optimization.log"))
    assert logs and any("Traceback (most recent call last)" in p.read_text() for p in logs)
    for log in logs:
        name = log.parent.relative_to(TREE).as_posix()
        state = json.loads((log.parent / "trainer_state.json").read_text())
        assert state["global_step"] >= 0.9 * state["max_steps"]
        assert runs[name].tags["tunelog.outcome"] == "ok", runs[name].tags.get("tunelog.reason")


def test_predict_and_test_results_land_under_their_split(wild):
    _, _, runs = wild
    with_predict = [
        (e["folder"], TREE / e["folder"])
        for e in manifest()
        if any(f["path"].endswith("predict_results.json") for f in e["files"])
    ]
    assert with_predict
    for name, folder in with_predict:
        keys = json.loads((folder / "predict_results.json").read_text())
        for key in keys:
            assert f"predict/{key.removeprefix('predict_')}" in runs[name].metrics, (name, key)
        assert not any(k.startswith("train/predict") for k in runs[name].metrics)


# --- the 10-run project's changelog --------------------------------------------------------------------------


def test_the_projects_changelog_says_which_metric_it_judged_by_and_what_the_others_say(wild):
    tracker, _, runs = wild
    project = [r for r in tracker.all_runs("wild") if r.tags["tunelog.project"] == PROJECT]
    assert len(project) == sum(1 for e in manifest() if e["folder"].startswith(PROJECT + "/"))
    log = build(project, "mti881")
    md = to_markdown(log)
    assert f"Headline metric: `{log.metric}`" in md and "Why this one:" in md
    f1 = [o for o in log.other_metrics if o.name.endswith("overall_f1")]
    assert f1, [o.name for o in log.other_metrics]
    # where F1 and loss disagree on the best run, the changelog says so
    by_f1 = max((r for r in project if "eval/overall_f1" in r.metrics), key=lambda r: r.metrics["eval/overall_f1"])
    if by_f1.run_id != log.best_id:
        assert "**not** the headline's best" in md


def test_no_run_is_another_projects_parent_and_a_model_config_is_no_lesson(wild):
    tracker, _, _ = wild
    every = tracker.all_runs("wild")
    project_of = {r.run_id: r.tags["tunelog.project"] for r in every}
    log = build(every, "wild")
    for entry in log.entries:
        if entry.parent_id:
            assert project_of[entry.parent_id] == project_of[entry.run_id], (entry.name, entry.parent_name)
    lessons = [effect.change for effect in log.worked + log.didnt]
    for entry in log.entries:
        lessons += list(entry.changes.changed) + list(entry.changes.added) + list(entry.changes.removed)
    mine = build([r for r in every if r.tags["tunelog.project"] == PROJECT], "mti881")
    lessons += [phase.changes for phase in mine.phases] + [phase.name for phase in mine.phases]
    assert not [k for k in lessons if "model_config." in k or "transformers_version" in k], lessons
