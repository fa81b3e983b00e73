"""stages (lineage, reuse, merge init, the entry point), on the demo's tiny model and a real MLflow store and registry."""

import json
import subprocess

import pytest
import torch
from mlflow import MlflowClient

from conftest import DEMO, demo_raw, run_cli, signal_when_ready, subprocess_env, write_spec
from tunelog.promote import load_model
from tunelog.spec import load_spec
from tunelog.stages import Pipeline
from tunelog.tracking import TAG_BASED_ON, Tracker


def pipeline_raw(init2="continue", steps=(6, 5, 4)):
    raw = demo_raw(eval_every=None)
    raw["train"].pop("max_steps")
    names = ["general", "bokmal", "dialect"]
    raw["pipeline"] = {
        "name": "p",
        "stages": [
            {
                "name": n,
                "train": str(DEMO / f"data/{n}/train.txt"),
                "eval": str(DEMO / f"data/{n}/eval.txt"),
                "max_steps": k,
                **({"init": init2} if n == "bokmal" else {}),
            }
            for n, k in zip(names, steps)
        ],
    }
    return raw


def stage_runs(store):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("test").experiment_id
    return client.search_runs([exp], "tags.`tunelog.kind` = 'stage'", order_by=["attributes.start_time ASC"])


def test_three_stages_with_lineage_forgetting_table_and_baseline(tmp_path, store):
    spec = load_spec(write_spec(tmp_path / "p.yaml", pipeline_raw()))
    outcome = Pipeline(spec, Tracker(), baseline=True, echo=lambda s: None).run()
    runs = stage_runs(store)
    assert [r.data.tags["tunelog.stage"] for r in runs] == ["general", "bokmal", "dialect"]
    assert TAG_BASED_ON not in runs[0].data.tags
    assert runs[1].data.tags[TAG_BASED_ON] == runs[0].info.run_id
    assert runs[2].data.tags[TAG_BASED_ON] == runs[1].info.run_id
    assert all(r.data.tags["mlflow.parentRunId"] == outcome.run_id for r in runs)
    assert set(k for k in runs[2].data.metrics if k.endswith("/loss") and k.count("/") == 2) == {
        "eval/general/loss",
        "eval/bokmal/loss",
        "eval/dialect/loss",
    }  # own and earlier sets
    assert "eval/dialect/loss" not in runs[1].data.metrics
    assert runs[1].data.params["model.adapter"] == f"runs:/{runs[0].info.run_id}/adapter"
    client = MlflowClient(store)
    pipe = client.get_run(outcome.run_id)
    assert pipe.data.metrics["pipeline/final"] == pytest.approx(outcome.stages[-1].result)
    assert pipe.data.metrics["pipeline/baseline"] == pytest.approx(outcome.baseline.result)
    assert "single-stage baseline of the same steps" in pipe.data.tags["mlflow.note.content"]
    note = pipe.data.tags["mlflow.note.content"]  # the pipeline's page: a stage table, forgetting in its columns
    assert "| stage | eval/loss | eval/general/loss | eval/bokmal/loss | eval/dialect/loss | run |" in note
    assert f"`{runs[2].info.run_id}`" in note and f"{runs[2].data.metrics['eval/general/loss']:.4g}" in note
    baseline_run = client.get_run(outcome.baseline.run_id)
    assert baseline_run.data.params["train.max_steps"] == "15"  # 6 + 5 + 4
    table = json.loads(open(client.download_artifacts(outcome.run_id, "stage_evals.json", str(tmp_path))).read())
    assert table["dialect"]["general"] == pytest.approx(runs[2].data.metrics["eval/general/loss"])


def test_rerun_skips_finished_stages_and_from_stage_reruns(tmp_path, store):
    spec = load_spec(write_spec(tmp_path / "p.yaml", pipeline_raw()))
    first = Pipeline(spec, Tracker(), echo=lambda s: None).run()
    again = Pipeline(spec, Tracker(), echo=lambda s: None).run()
    assert [s.reused for s in again.stages] == [True, True, True]
    assert [s.run_id for s in again.stages] == [s.run_id for s in first.stages]
    third = Pipeline(spec, Tracker(), from_stage=3, echo=lambda s: None).run()
    assert [s.reused for s in third.stages] == [True, True, False]
    assert len(stage_runs(store)) == 4
    changed = load_spec(write_spec(tmp_path / "q.yaml", pipeline_raw(steps=(6, 7, 4))))
    fourth = Pipeline(changed, Tracker(), echo=lambda s: None).run()
    assert [s.reused for s in fourth.stages] == [True, False, False]  # stage 2 changed: it and what follows rerun


def eval_loss(loaded, path):
    from tunelog.trainers.hf import evaluate
    from tunelog.training.data import tokenize

    texts = [line for line in path.read_text().splitlines() if line.strip()]
    data = tokenize(texts, loaded.tokenizer, 48)
    return evaluate(loaded.model, data, 8, loaded.device, lambda: torch.autocast("cpu", enabled=False))


def test_merge_init_is_rebuilt_by_load_model(tmp_path, store):
    spec = load_spec(write_spec(tmp_path / "m.yaml", pipeline_raw(init2="merge")))
    outcome = Pipeline(spec, Tracker(), echo=lambda s: None).run()
    run = Tracker().get_run(outcome.stages[1].run_id)
    assert run.params["model.adapter_init"] == "merge"
    loaded = load_model(f"runs:/{run.run_id}/adapter")
    assert eval_loss(loaded, DEMO / "data/bokmal/eval.txt") == pytest.approx(run.metrics["eval/loss"], abs=1e-5)


def test_stages_without_a_pipeline_is_a_clear_error(tmp_path, store):
    path = write_spec(tmp_path / "n.yaml", demo_raw())
    proc = run_cli("stages", str(path))
    assert proc.returncode == 2 and "pipeline: missing" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_mlflow_run_stages_entry_point_promotes_the_winner(tmp_path, store):
    from conftest import REPO

    path = write_spec(tmp_path / "p.yaml", pipeline_raw())
    proc = subprocess.run(
        [
            "mlflow",
            "run",
            str(REPO),
            "-e",
            "stages",
            "--env-manager",
            "local",
            "--experiment-name",
            "test",
            "-P",
            f"spec={path}",
            "-P",
            "promote=stage-model",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(store),
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r.data.tags["tunelog.stage"] for r in stage_runs(store)] == ["general", "bokmal", "dialect"]
    client = MlflowClient(store)
    pipeline = client.search_runs(
        [client.get_experiment_by_name("test").experiment_id], "tags.`tunelog.kind` = 'pipeline'"
    )[0]
    assert "pipeline/baseline" in pipeline.data.metrics and "pipeline/final" in pipeline.data.metrics
    champion = client.get_model_version_by_alias("stage-model", "champion")
    final, base = pipeline.data.metrics["pipeline/final"], pipeline.data.metrics["pipeline/baseline"]
    assert float(champion.tags["metric_value"]) == pytest.approx(min(final, base))  # whichever won


def test_sigterm_mid_stage_two_closes_every_run_and_the_rerun_resumes(tmp_path, store):
    """SIGTERM while stage 2 trains: the stage and the pipeline end KILLED (never RUNNING), the process exits
    143 with no traceback, and stage 1 stays FINISHED for the rerun to reuse (reuse itself:
    test_rerun_skips_finished_stages_and_from_stage_reruns)."""
    import sys

    path = write_spec(tmp_path / "p.yaml", pipeline_raw(steps=(2, 100_000, 2)))
    client = MlflowClient(store)

    def stage_two_trains():  # waits on state (stage 2's first losses in the store), not on a clock
        exp = client.get_experiment_by_name("test")
        found = client.search_runs([exp.experiment_id], "tags.`tunelog.stage` = 'bokmal'") if exp else []
        if found and client.get_metric_history(found[0].info.run_id, "train/loss"):
            return found[0].info.run_id
        return None

    argv = [sys.executable, "-m", "tunelog.cli", "stages", path]
    second, code, err = signal_when_ready(argv, subprocess_env(store), stage_two_trains, "stage 2 training")
    assert code == 143 and "Traceback" not in err, err[-2000:]
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert all(r.info.status != "RUNNING" for r in runs)
    assert client.get_run(second).info.status == "KILLED"
    first = next(r for r in runs if r.data.tags.get("tunelog.stage") == "general")
    pipeline = next(r for r in runs if r.data.tags.get("tunelog.kind") == "pipeline")
    assert first.info.status == "FINISHED" and pipeline.info.status == "KILLED"
