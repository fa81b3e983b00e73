"""changelog: the imported legacy history judged and rendered; demo runs with based-on links; the SQL fast path."""

import json

from mlflow import MlflowClient

from conftest import demo_raw, mlflow_server, run_cli, write_spec
from tunelog import changelog as cl
from tunelog import tracking as t
from tunelog.spec import load_spec
from tunelog.tracking import TAG_BASED_ON, Tracker
from tunelog.train import run_training


def test_changelog_data_of_the_legacy_history(imported, store):
    log = cl.collect_and_build(Tracker(), "speech")
    e = log.by_name
    assert log.metric == "val_loss" and log.direction == "minimize"
    parents = {x.name: x.parent_name for x in log.entries}
    assert parents["01_baseline"] is None
    assert parents["02_lr_5e-3"] == "01_baseline"
    assert parents["03_lr_2e-3"] == "01_baseline"  # tie between 01 and 02: the one that ended ok wins
    assert parents["04_recovery"] == "01_baseline" and e("04_recovery").lineage == "based_on"  # resume_from
    assert parents["07_ema_repeat"] == "06_ema"
    assert parents["11_batch_64"] == "09_layers_6"  # not the OOM run, one key away too
    # 08 is as close to the anomalous repeat 07 as to its sane twin 06: measured against 06, and says so
    assert parents["08_dropout_0.2"] == "06_ema" and e("08_dropout_0.2").twin_of == "07_ema_repeat"
    assert parents["15_no_ema"] == "13_lr_5e-4"
    assert parents["16_final_tune"] == "13_lr_5e-4"
    assert parents["19_layers_8_args"] == "17_final_repeat"
    assert e("04_recovery").changes.changed == {"batch_size": ("16", "32")}
    assert e("04_recovery").changes.added == {"resume_from": "../01_baseline/checkpoint_best.pt"}
    assert e("05_cosine").changes.removed == {"resume_from": "../01_baseline/checkpoint_best.pt"}
    assert e("06_ema").changes.changed == {"ema": ("False", "True")}
    assert e("06_ema").changes.added == {"ema_decay": "0.999"}
    assert e("15_no_ema").changes.changed == {"ema": ("True", "False")}
    assert e("15_no_ema").changes.removed == {"ema_decay": "0.999"}
    assert e("07_ema_repeat").repeat and e("17_final_repeat").repeat
    assert log.entry(log.best_id).name == "16_final_tune"
    kinds = {(a.name, a.kind) for a in log.anomalies}
    assert ("07_ema_repeat", "repeat-mismatch") in kinds
    assert ("17_final_repeat", "repeat-mismatch") not in kinds  # 1.41 vs 1.40 is within tolerance
    assert ("02_lr_5e-3", "diverged") in kinds and ("10_batch_128", "oom") in kinds
    assert ("15_no_ema", "far-worse") in kinds
    assert [log.entry(r).name for r in log.timeline] == [
        "01_baseline",
        "04_recovery",
        "05_cosine",
        "06_ema",
        "08_dropout_0.2",
        "09_layers_6",
        "11_batch_64",
        "12_warmup_8000",
        "13_lr_5e-4",
        "16_final_tune",
    ]
    worked = {w.change for w in log.worked}
    assert "scheduler noam→cosine + resume_from removed" in worked and "dropout 0.2→0.15" in worked
    assert "dropout 0.1→0.2" in worked  # 08 vs 06 (1.65 vs 1.70), not vs the anomalous 07 (2.90)
    assert "scheduler cosine→linear" in {d.change for d in log.didnt}
    assert log.best_config["dropout"] == "0.15"


def test_changelog_output_is_byte_identical_and_json_matches(imported, store, tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"c{i}.md"
        proc = run_cli("changelog", "--experiment", "speech", "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    text = outs[0].decode()
    for heading in (
        "# Changelog: speech",
        "## Timeline",
        "## What worked",
        "## What didn't",
        "## Anomalies",
        "## Final best configuration",
        "### 16_final_tune (best)",
    ):
        assert heading in text
    assert (
        "No logged param differs from 06_ema, but its result does (2.9 vs 1.7): what differs is not in the record."
        in text
    )
    assert "- Changed: `batch_size`: 16 -> 32" in text
    proc = run_cli("changelog", "--experiment", "speech", "--format", "json", "--no-log")
    data = json.loads(proc.stdout)
    assert data["metric"] == "val_loss" and len(data["entries"]) == 19
    changelog_runs = [r for r in Tracker().all_runs("speech") if r.kind == "changelog"]
    assert len(changelog_runs) == 2  # the two Markdown runs logged their artifact; --no-log did not


def test_three_demo_trainings_with_based_on_links(tmp_path, store):
    spec = load_spec(write_spec(tmp_path / "d.yaml", demo_raw(max_steps=6, eval_every=None)))
    tracker = Tracker()
    first, _ = run_training(
        spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"run_name": "baseline"})}), tracker
    )
    second_spec = spec.with_overrides({"lora.r": 16, "tracking.run_name": "rank16"})
    second, _ = run_training(second_spec, tracker, based_on=first)
    third_spec = spec.with_overrides({"lora.r": 16, "train.learning_rate": 2e-3, "tracking.run_name": "rank16-lr"})
    third, _ = run_training(third_spec, tracker)
    proc = run_cli("based-on", third, second)
    assert proc.returncode == 0 and Tracker().get_run(third).tags[TAG_BASED_ON] == second
    text = cl.to_markdown(cl.collect_and_build(Tracker(), "test"))
    sections = [line for line in text.splitlines() if line.startswith("#")]
    assert sections[0] == "# Changelog: test"
    assert "## Timeline" in sections and "## Runs" in sections and "## Final best configuration" in sections
    assert {"### baseline", "### rank16", "### rank16-lr"} <= {s.replace(" (best)", "") for s in sections}
    assert "Changes vs baseline:\n- Changed: `lora.r`: 8 -> 16" in text
    assert "Changes vs rank16:\n- Changed: `train.learning_rate`: 0.005 -> 0.002" in text
    assert "Baseline: no earlier run to compare with." in text


def test_based_on_refuses_unknown_runs(store):
    proc = run_cli("based-on", "nope", "nada")
    assert proc.returncode == 1 and "no run 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_fast_sql_collection_equals_the_mlflow_search_api(imported, store, tmp_path):
    tracker = Tracker()
    exp = tracker.client.get_experiment_by_name("speech").experiment_id
    tracker.client.delete_run(Tracker().find_runs("speech", {"tunelog.name": "03_lr_2e-3"})[0].run_id)

    def comparable(records):
        return [
            (
                r.run_id,
                r.name,
                r.status,
                r.start_ms,
                r.end_ms,
                r.params,
                r.tags,
                r.experiment_id,
                r.experiment_name,
                {k: repr(v) for k, v in r.metrics.items()},
            )
            for r in records
        ]

    fast, api = tracker._all_runs_sql(exp, "speech"), tracker._all_runs_api(exp, "speech")
    assert len(fast) == 18  # the deleted run is left out by both
    assert comparable(fast) == comparable(api)
    # `mlflow server --app-name tunelog` runs the same queries and readers over REST take its answer
    with mlflow_server(tmp_path / "server", backend=store, app="tunelog") as server:
        assert "bulk runs at /api/2.0/tunelog/runs" in (tmp_path / "server" / "server.log").read_text()
        served = Tracker(server)._all_runs_server(exp, "speech")
        assert served is not None and comparable(served) == comparable(api)
        assert comparable(Tracker(server).all_runs("speech")) == comparable(api)


def test_the_experiment_page_shows_the_story(imported, store):
    """`changelog` sets the experiment's description (what the MLflow UI shows first) to the summary."""
    proc = run_cli("changelog", "--experiment", "speech", "-o", "/dev/null")
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(store)
    note = client.get_experiment_by_name("speech").tags["mlflow.note.content"]
    lines = note.splitlines()
    assert lines[0] == "# Changelog: speech" and len(lines) <= 200
    assert any(line.startswith("Best: **") for line in lines) and "## Timeline" in note
    assert "## What worked" in note and "## Anomalies" in note
    assert "### " not in note  # per-run sections stay in the full changelog artifact


def test_sweeps_and_probes_fold_into_tables(store):
    """40 trials (3 rejected, 1 diverged) and a probe of 6 candidates: a leaderboard and a candidate table,
    details only for the best trial and the anomaly, each rejected trial one line."""
    tracker, t0 = Tracker(), 1_700_000_000_000
    sweep = tracker.create_finished_run(
        "folded",
        "demo-sweep",
        t0,
        t0 + 4_000_000,
        "FINISHED",
        {},
        {t.TAG_KIND: t.KIND_SWEEP, t.TAG_NAME: "demo-sweep"},
        [],
    )
    for i in range(40):
        start = t0 + i * 100_000
        outcome = "rejected" if i % 13 == 5 else ("diverged" if i == 7 else "ok")
        tags = {
            t.TAG_KIND: t.KIND_TRIAL,
            t.TAG_NAME: f"trial-{i}",
            t.TAG_PARENT: sweep,
            t.TAG_OUTCOME: outcome,
            t.TAG_REASON: "warmup-rule: warmup longer than training" if outcome == "rejected" else "",
            t.TAG_METRIC: "eval/loss",
        }
        params = {"train.learning_rate": repr(1e-4 * (1 + i % 7)), "lora.r": str(4 * (1 + i % 3)), "seed": "0"}
        value = 2.0 + ((i * 7) % 11) / 10 if outcome == "ok" else float("nan")
        metrics = [] if outcome == "rejected" else [("eval/loss", value, start + 50_000, 0)]
        tracker.create_finished_run("folded", f"trial-{i}", start, start + 60_000, "FINISHED", params, tags, metrics)
    probe = tracker.create_finished_run(
        "folded",
        "probe",
        t0 + 5e6,
        t0 + 5e6 + 1000,
        "FINISHED",
        {},
        {t.TAG_KIND: t.KIND_PROBE, t.TAG_NAME: "probe"},
        [],
    )
    for b in (1, 2, 4, 8, 16, 32):
        tags = {t.TAG_KIND: t.KIND_PROBE, t.TAG_NAME: f"batch {b}", t.TAG_PARENT: probe, t.TAG_OUTCOME: "ok"}
        tracker.create_finished_run(
            "folded",
            f"batch {b}",
            t0 + 5e6,
            t0 + 5e6,
            "FINISHED",
            {"train.batch_size": str(b)},
            tags,
            [("perf/samples_per_s", 10.0 * b, t0, 0)],
        )
    log = cl.collect_and_build(tracker, "folded")
    md = cl.to_markdown(log)
    headings = [line for line in md.splitlines() if line.startswith("### ")]
    assert headings == [
        "### trial-0 (best)",
        "### trial-7 — anomaly: diverged, NaN/inf result",
        "### probe",
    ]
    assert "40 trials: 1 diverged, 36 ok, 3 rejected" in md
    assert "| trial | eval/loss | `lora.r` | `train.learning_rate` | duration |" in md
    assert "| trial-0 | 2 | 4 | 0.0001 | 1m 00s |" in md and "(26 more scored trials)" in md
    assert "| trial-33 | 2 | 4 | 0.0006 | 1m 00s |" in md  # the cell, not 0.0006000000000000001
    assert "- trial-5: rejected, warmup-rule: warmup longer than training" in md
    assert "| batch 32 | ok | 320 | n/a |" in md
    assert len(md.splitlines()) < 90


def test_a_rejected_trial_does_not_make_every_key_look_varied():
    """A rejected trial logs only its sampled params; the best trial's "Kept" still lists only what varies."""
    from tunelog.tracking import RunRecord

    def run(rid, kind, params, outcome="ok", loss=None, start=0):
        tags = {t.TAG_KIND: kind, t.TAG_OUTCOME: outcome, t.TAG_PARENT: "sweep" if kind == "trial" else ""}
        metrics = {"eval/loss": loss} if loss is not None else {}
        return RunRecord(rid, rid, "FINISHED", start, start + 1, params, metrics, {k: v for k, v in tags.items() if v})

    fixed = {"lora.r": "8", "train.batch_size": "16", "data.format": "auto"}
    runs = [
        run("sweep", t.KIND_SWEEP, {}),
        run("a", t.KIND_TRIAL, {**fixed, "train.learning_rate": "0.001"}, loss=2.0, start=1),
        run("b", t.KIND_TRIAL, {**fixed, "train.learning_rate": "0.002"}, loss=1.5, start=2),
        run("c", t.KIND_TRIAL, {"train.learning_rate": "0.5"}, outcome="rejected", start=3),
    ]
    log = cl.build(runs, "x")
    assert log.entry(log.best_id).name == "b"
    assert log.by_name("b").changes.kept == {"train.learning_rate": "0.002"}
