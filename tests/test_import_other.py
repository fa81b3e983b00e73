"""Records other tools left on disk (../shared/real-runs/other, read in place): W&B offline runs (a DPO project
and a GRPO project), each `wandb/run-*` folder one run, the history read through the wandb SDK's own
reader; a Ludwig experiment, its splits' TensorBoard events through tensorboard's own loader. Expectations
from the raw files. Skipped, with the reason, where the folders or the readers are absent."""

import json
import math
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tunelog.importer import import_tree
from tunelog.importer.tree import mlflow_name
from tunelog.tracking import Tracker

OTHER = Path(__file__).resolve().parent.parent.parent / "shared/real-runs/other"
PROJECTS = [OTHER / "SteveHong1901__reasoning", OTHER / "Rusheel86__Chaos-Economy"]
LUDWIG = OTHER / "IgorCzudy__Ludwig"
try:
    from wandb.sdk.internal import datastore as wandb
except ImportError:  # the SDK's DataStore: wandb<0.30 (the dev extra pins it)
    wandb = None
needs_wandb = pytest.mark.skipif(
    wandb is None or not all(p.is_dir() for p in PROJECTS), reason=f"no W&B SDK or runs under {OTHER}"
)


def sdk_history(record: Path) -> tuple[dict[str, dict[int, list[float]]], int | None]:
    """{metric: {step: values}} as the SDK reads the `.wandb` file, and the exit code (None: none). A metric's step
    is its `define_metric` step metric's latest value (exact name, else the longest matching glob; W&B's
    `step_sync`), else the row's `_step`; step metrics are the x-axis, not series."""
    from fnmatch import fnmatchcase

    from wandb.proto import wandb_internal_pb2 as pb

    store = wandb.DataStore()
    store.open_for_scan(str(record))
    out: dict[str, dict[int, list[float]]] = {}
    exit_code, axis, latest = None, {}, {}
    while (data := store.scan_data()) is not None:
        rec = pb.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "exit":
            exit_code = rec.exit.exit_code
        if kind == "metric" and rec.metric.step_metric:
            axis[rec.metric.name or rec.metric.glob_name] = rec.metric.step_metric
        if kind != "history":
            continue
        row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
        row.setdefault("_step", rec.history.step.num)
        latest.update({k: v for k, v in row.items() if k in axis.values() or k == "_step"})
        for key, value in row.items():
            if key.startswith("_") or key in axis.values() or not isinstance(value, (int, float)):
                continue
            globs = sorted((g for g in axis if fnmatchcase(key, g)), key=len)
            x = axis.get(key) or (axis[globs[-1]] if globs else "_step")
            out.setdefault(key, {}).setdefault(int(latest.get(x, row["_step"])), []).append(float(value))
    return out, exit_code


def imported_once(root: Path, folders: list[Path], experiment: str) -> tuple[dict, MlflowClient]:
    """Import ROOT: exactly these folders become runs (named by their path under ROOT); {folder: its run}."""
    report = import_tree(root, Tracker(), experiment)
    assert sorted(report.imported) == [f.relative_to(root).as_posix() for f in folders], report.not_runs
    runs = {r.name: r for r in Tracker().all_runs(experiment)}
    return {f: runs[f.relative_to(root).as_posix()] for f in folders}, MlflowClient()


@needs_wandb
@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name.split("__")[0])
def test_each_wandb_offline_run_is_a_run_with_its_history_config_summary_times_and_outcome(project, tmp_path, store):
    folders = sorted(project.glob("wandb/run-*"))
    runs, client = imported_once(project, folders, "wb")
    for folder in folders:
        run = runs[folder]
        history, exit_code = sdk_history(next(folder.glob("run-*.wandb")))
        for key in history:  # every series the run logged, every point (under the name MLflow takes)
            logged: dict[int, list[float]] = {}
            for m in client.get_metric_history(run.run_id, mlflow_name(key)):
                logged.setdefault(m.step, []).append(m.value)
            expected = {s: sorted(v for v in vs if math.isfinite(v)) for s, vs in history.get(key, {}).items()}
            assert {s: sorted(v) for s, v in logged.items()} == {s: v for s, v in expected.items() if v}, (folder, key)
        summary = json.loads((folder / "files/wandb-summary.json").read_text())
        if "train_runtime" in summary:
            assert run.metrics["train_runtime"] == pytest.approx(summary["train_runtime"])
        config = folder / "files/config.yaml"
        if config.is_file():
            raw = yaml.safe_load(config.read_text())
            assert run.params["learning_rate"] == str(raw["learning_rate"]["value"])
        started = json.loads((folder / "files/wandb-metadata.json").read_text())["startedAt"]
        assert run.start_ms == int(datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() * 1000)
        assert (run.end_ms - run.start_ms) // 1000 == int(summary["_wandb"]["runtime"])
        outcome = run.tags["tunelog.outcome"]
        assert outcome == ("ok" if exit_code == 0 else "failed"), (folder, run.tags.get("tunelog.reason"))
    again = import_tree(project, Tracker(), "wb")
    assert not again.imported and len(again.skipped) == len(folders)


@pytest.mark.skipif(not LUDWIG.is_dir(), reason=f"no Ludwig experiment at {LUDWIG}")
def test_a_ludwig_experiment_is_one_run_with_its_config_and_every_splits_events(tmp_path, store):
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    report = import_tree(LUDWIG, Tracker(), "ludwig")
    assert report.imported == ["results/experiment_run"] and not report.not_runs and not report.warnings
    (run,) = Tracker().all_runs("ludwig")
    folder = LUDWIG / "results/experiment_run"
    description = json.loads((folder / "description.json").read_text())
    assert run.params["trainer.learning_rate"] == str(description["config"]["trainer"]["learning_rate"])
    assert run.params["combiner.type"] == description["config"]["combiner"]["type"]
    expected: dict[str, list] = {}
    for events in sorted(folder.glob("model/logs/*/*tfevents*")):
        for event in LegacyEventFileLoader(str(events)).Load():
            for value in event.summary.value if event.HasField("summary") else ():
                expected.setdefault(f"{events.parent.name}/{value.tag}", []).append((event.step, value.simple_value))
    assert expected and set(expected) <= set(run.metrics)
    client = MlflowClient()
    for key, points in expected.items():
        logged = [(m.step, m.value) for m in client.get_metric_history(run.run_id, key)]
        assert sorted(logged) == sorted(points), key
    assert run.tags["tunelog.outcome"] == "ok"


FILE_STORE = OTHER / "10padmapriya__LLM-Models-Train-Themselves-Using-the-Prompts"


@pytest.mark.skipif(not FILE_STORE.is_dir(), reason=f"no committed mlruns/ file store at {FILE_STORE}")
def test_a_committed_mlflow_file_store_is_one_line_naming_mlflows_own_migration_which_then_reads(tmp_path, store):
    """`import` of a project holding an `mlruns/` file store says, in one line, to bring it in with MLflow's own
    `migrate-filestore`; done as said, tunelog reads those runs (every run there, by its MLflow name)."""
    import subprocess
    import sys

    report = import_tree(FILE_STORE, Tracker(), "fs")
    assert not report.imported and len(report.not_runs) == 1
    (where, why) = report.not_runs[0]
    assert where == "mlruns" and "mlflow migrate-filestore --source" in why
    target = f"sqlite:///{tmp_path / 'imported.db'}"
    command = why.split("`")[1].replace("sqlite:///imported.db", target)
    subprocess.run([sys.executable, "-m", *command.split()], check=True, capture_output=True, timeout=300)
    runs = [d for d in (FILE_STORE / "mlruns").glob("*/*") if (d / "meta.yaml").is_file()]
    assert len(Tracker(target).all_runs("llm-self-training")) == len(runs)


LIGHTNING = OTHER / "MateusHSAraujo__Brain_Tumor_Detecting_Challange"


@pytest.mark.skipif(not LIGHTNING.is_dir(), reason=f"no Lightning TensorBoard runs at {LIGHTNING}")
def test_lightning_tensorboard_versions_are_runs_with_their_hparams_and_every_scalar(tmp_path, store):
    """Lightning `version_N/` folders holding only events and `hparams.yaml` (no metrics.csv): each a run, its
    hparams its params, every scalar of its event files (a resumed version has two) a point."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    versions = sorted((LIGHTNING / "lightning_logs").glob("version_*"))
    runs, client = imported_once(LIGHTNING, versions, "lightning-tb")
    for version in versions:
        run = runs[version]
        hparams = yaml.safe_load((version / "hparams.yaml").read_text())
        assert {k: run.params.get(k) for k in hparams} == {k: str(v) for k, v in hparams.items()}, version
        points: dict[tuple[str, int], float] = {}  # a later write of the same step wins, as in TensorBoard
        for events in sorted(version.glob("*tfevents*")):
            for event in LegacyEventFileLoader(str(events)).Load():
                for value in event.summary.value if event.HasField("summary") else ():
                    if value.HasField("simple_value"):  # a scalar (not the hparams plugin's session records)
                        points[(value.tag, event.step)] = value.simple_value
        for tag in {tag for tag, _ in points}:
            logged = {m.step: m.value for m in client.get_metric_history(run.run_id, mlflow_name(tag))}
            assert logged == {step: v for (t, step), v in points.items() if t == tag}, (version, tag)
