"""changelog and import: a legacy speech-decoder history imported and judged; demo runs rendered."""

import json
import math
from datetime import datetime, timedelta

import pytest
from mlflow import MlflowClient

from conftest import demo_raw, run_cli, write_spec
from tunelog import changelog as cl
from tunelog.importer import import_tree
from tunelog.logparse import LogParser
from tunelog.spec import load_spec
from tunelog.tracking import TAG_BASED_ON, Tracker
from tunelog.train import run_training

BASE = {
    "lr": 0.001,
    "batch_size": 16,
    "optimizer": "adam",
    "scheduler": "noam",
    "ema": False,
    "dropout": 0.1,
    "layers": 4,
    "warmup": 4000,
}
T0 = datetime(2024, 3, 1, 8, 0, 0)

# name, config (from BASE), final val_loss (None: none logged), log style, extra log text
HISTORY = [
    ("01_baseline", {}, 2.00, "kv", ""),
    ("02_lr_5e-3", {"lr": 0.005}, float("nan"), "kv", ""),
    ("03_lr_2e-3", {"lr": 0.002}, 2.10, "kv", ""),
    ("04_recovery", {"batch_size": 32, "resume_from": "../01_baseline/checkpoint_best.pt"}, 1.90, "kv", ""),
    ("05_cosine", {"batch_size": 32, "scheduler": "cosine"}, 1.80, "hf", ""),
    ("06_ema", {"batch_size": 32, "scheduler": "cosine", "ema": True, "ema_decay": 0.999}, 1.70, "tqdm", ""),
]
R06 = HISTORY[-1][1]
HISTORY += [
    ("07_ema_repeat", dict(R06), 2.90, "kv", ""),
    ("08_dropout_0.2", {**R06, "dropout": 0.2}, 1.65, "kv", ""),
    ("09_layers_6", {**R06, "dropout": 0.2, "layers": 6}, 1.60, "batch", ""),
    (
        "10_batch_128",
        {**R06, "dropout": 0.2, "layers": 6, "batch_size": 128},
        None,
        "kv",
        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n",
    ),
    ("11_batch_64", {**R06, "dropout": 0.2, "layers": 6, "batch_size": 64}, 1.55, "kv", ""),
]
R11 = HISTORY[-1][1]
HISTORY += [
    ("12_warmup_8000", {**R11, "warmup": 8000}, 1.50, "batch", ""),
    ("13_lr_5e-4", {**R11, "warmup": 8000, "lr": 0.0005}, 1.45, "hf", ""),
    ("14_lr_2e-4", {**R11, "warmup": 8000, "lr": 0.0002}, 1.60, "kv", ""),
]
R13 = HISTORY[-2][1]
HISTORY += [
    ("15_no_ema", {k: v for k, v in {**R13, "ema": False}.items() if k != "ema_decay"}, 1.90, "kv", ""),
    ("16_final_tune", {**R13, "dropout": 0.15}, 1.40, "kv", "Final val_loss: 1.40\n"),
    ("17_final_repeat", {**R13, "dropout": 0.15}, 1.41, "kv", ""),
    ("18_linear_sched", {**R13, "dropout": 0.15, "scheduler": "linear"}, 1.48, "tqdm", ""),
    ("19_layers_8_args", {**R13, "dropout": 0.15, "layers": 8}, 1.43, "args", ""),
]


def _log(name: str, start: datetime, final: float | None, style: str, extra: str) -> str:
    lines = [f"{start:%Y-%m-%d %H:%M:%S} INFO starting {name}"]
    vals = [3.0, 2.5, final] if final is not None else [3.0]
    for i, val in enumerate(vals, start=1):
        ts = start + timedelta(minutes=10 * i)
        loss = val if val is None or math.isnan(val) else val + 0.1
        step = 1000 * i
        if style == "hf":
            lines.append(f"{ts:%Y-%m-%d %H:%M:%S} {{'loss': {loss}, 'learning_rate': 0.0005, 'step': {step}}}")
            lines.append(f"{ts:%Y-%m-%d %H:%M:%S} {{'val_loss': {val}, 'epoch': {i}.0, 'step': {step}}}")
        elif style == "tqdm":
            lines.append(f"Epoch {i}: 100%|##########| 500/500 [01:00<00:00, 8.3it/s, loss={loss}, val_loss={val}]")
        elif style == "batch":
            lines.append(f"{ts:%Y-%m-%d %H:%M:%S} batch {step}, loss: {loss}")
            lines.append(f"{ts:%Y-%m-%d %H:%M:%S} batch {step}, val_loss: {val}")
        else:
            lines.append(f"{ts:%Y-%m-%d %H:%M:%S} step={step} loss={loss} val_loss={val}")
    lines.append(f"{start + timedelta(minutes=45):%Y-%m-%d %H:%M:%S} INFO done")
    return "\n".join(lines) + "\n" + extra


def build_tree(root):
    for i, (name, overrides, final, style, extra) in enumerate(HISTORY):
        folder = root / name
        folder.mkdir(parents=True)
        config = {**BASE, **overrides}
        if style == "args":
            (folder / "args.txt").write_text(" ".join(f"--{k} {v}" for k, v in config.items()))
        else:
            (folder / "args.json").write_text(json.dumps(config))
        (folder / "train.log").write_text(_log(name, T0 + timedelta(hours=i), final, style, extra))
    (root / "04_recovery" / "notes.md").write_text("Resumed from the baseline's best checkpoint.")
    broken = root / "20_broken_log"
    broken.mkdir()
    (broken / "args.json").write_text(json.dumps(BASE))
    (broken / "train.log").write_bytes(b"\x89PNG\x00\xff\xfe garbage")
    return root


@pytest.fixture
def imported(tmp_path, store):
    tree = build_tree(tmp_path / "legacy")
    report = import_tree(tree, Tracker(), "speech", metric="val_loss")
    return tree, report


def test_import_reads_every_folder_and_warns_once_for_the_broken_log(imported):
    _, report = imported
    assert len(report.imported) == 19 and report.skipped == []
    assert len(report.warnings) == 1 and report.warnings[0].startswith("20_broken_log: skipped: log train.log")


def test_import_is_idempotent(imported, store):
    tree, _ = imported
    again = import_tree(tree, Tracker(), "speech", metric="val_loss")
    assert again.imported == [] and len(again.skipped) == 19
    assert len(Tracker().all_runs("speech")) == 19


def test_imported_runs_carry_times_notes_outcomes_and_metrics(imported, store):
    runs = {r.name: r for r in Tracker().all_runs("speech")}
    base = runs["01_baseline"]
    assert base.start_ms == int(T0.timestamp() * 1000) and base.end_ms - base.start_ms == 45 * 60 * 1000
    assert base.metrics["val_loss"] == 2.0 and base.params["lr"] == "0.001"
    assert runs["04_recovery"].tags["mlflow.note.content"] == "Resumed from the baseline's best checkpoint."
    assert runs["02_lr_5e-3"].tags["tunelog.outcome"] == "diverged"
    assert runs["10_batch_128"].tags["tunelog.outcome"] == "oom"
    assert runs["16_final_tune"].metrics["final_val_loss"] == 1.40
    assert runs["19_layers_8_args"].params["layers"] == "8"  # --key value args
    history = MlflowClient(store).get_metric_history(runs["06_ema"].run_id, "val_loss")  # tqdm postfixes
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [3.0, 2.5, 1.7]


def test_changelog_data_of_the_legacy_history(imported, store):
    log = cl.collect_and_build(Tracker(), "speech")
    e = log.by_name
    assert log.metric == "val_loss" and log.direction == "minimize"
    parents = {x.name: x.parent_name for x in log.entries}
    assert parents["01_baseline"] is None
    assert parents["02_lr_5e-3"] == "01_baseline"
    assert parents["03_lr_2e-3"] == "02_lr_5e-3"  # tie between 01 and 02: the most recent wins
    assert parents["04_recovery"] == "01_baseline" and e("04_recovery").lineage == "based_on"  # resume_from
    assert parents["07_ema_repeat"] == "06_ema"
    assert parents["11_batch_64"] == "10_batch_128"
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
        "07_ema_repeat",
        "08_dropout_0.2",
        "09_layers_6",
        "10_batch_128",
        "11_batch_64",
        "12_warmup_8000",
        "13_lr_5e-4",
        "16_final_tune",
    ]
    worked = {w.change for w in log.worked}
    assert "scheduler: noam -> cosine" in worked and "dropout: 0.2 -> 0.15" in worked
    assert "scheduler: cosine -> linear" in {d.change for d in log.didnt}
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
    assert "No changes: a repeat of 06_ema." in text
    assert "- Changed: `batch_size`: 16 -> 32" in text
    proc = run_cli("changelog", "--experiment", "speech", "--format", "json", "--no-log")
    data = json.loads(proc.stdout)
    assert data["metric"] == "val_loss" and len(data["entries"]) == 19
    changelog_runs = [r for r in Tracker().all_runs("speech") if r.kind == "changelog"]
    assert len(changelog_runs) == 2  # the two Markdown runs logged their artifact; --no-log did not


def test_log_parser_styles():
    p = LogParser()
    assert p.parse_line("2024-01-01 10:00:00 step=5 loss=1.5 lr=1e-4") == (1704103200000, 5, {"loss": 1.5, "lr": 1e-4})
    assert p.parse_line("{'loss': 0.5, 'learning_rate': 2e-05, 'epoch': 0.3}")[2] == {
        "loss": 0.5,
        "learning_rate": 2e-05,
        "epoch": 0.3,
    }
    assert p.parse_line(" 40%|####      | 40/100 [00:04<00:06, 9.8it/s, loss=0.93, lr=3e-4]")[2] == {
        "loss": 0.93,
        "lr": 3e-4,
    }
    assert p.parse_line("batch 120, loss: 2.25") == (None, 120, {"loss": 2.25})
    assert p.parse_line("Best validation loss: 1.234")[2] == {"best_validation_loss": 1.234}
    assert p.parse_line("loading model from /tmp/x") == (None, None, {})
    assert p.parse_line("steps:  40%|####  | 40/100 [00:04<00:06, 9.8it/s, loss=0.9]") == (None, 40, {"loss": 0.9})
    assert p.parse_line('{"step": 7, "loss": 0.25, "tag": "x"}') == (None, 7, {"loss": 0.25})  # JSON lines too
    assert p.parse_line("iteration #12 validation 5 wer: 0.3") == (None, 12, {"wer": 0.3})
    assert p.parse_line("[2024-01-01 10:00:01] Final eval loss: 1.23") == (
        1704103201000,
        None,
        {"final_eval_loss": 1.23},
    )
    assert p.parse_line("epoch=1 loss=nan")[2]["epoch"] == 1 and math.isnan(p.parse_line("loss=NaN")[2]["loss"])
    # lines of one shape (digits aside) share a parse plan; keys and values still come from each line
    assert p.parse_line("layer3_loss=0.5 step 7")[1:] == (7, {"layer3_loss": 0.5})
    assert p.parse_line("layer4_loss=0.6 step 8")[1:] == (8, {"layer4_loss": 0.6})
    assert p.parse_line("Final top5 acc: 0.91")[2] == {"final_top5_acc": 0.91}
    log = p.parse(["step=10 loss=2.0", "noise", " 3/9 [00:01<00:02, loss=1.5]", "loss=1.0", "Best loss: 0.9"])
    assert log.lines == 5 and log.metric_lines == 4
    assert [(k, v, s) for k, v, s, _ in log.series] == [
        ("loss", 2.0, 10),
        ("loss", 1.5, 11),
        ("loss", 1.0, 12),
        ("best_loss", 0.9, 1),
    ]  # a restarted bar never goes back
    custom = LogParser([r"acc@1 (?P<value>[\d.]+)(?P<key>)"])
    assert custom.parse_line("it 3 acc@1 0.75")[2] == {}  # an empty key group names nothing
    custom = LogParser([r"(?P<key>wer)\s+(?P<value>[\d.]+)%"])
    assert custom.parse_line("dev wer 12.5%")[2] == {"wer": 12.5}


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
    assert "Changes from baseline:\n- Changed: `lora.r`: 8 -> 16" in text
    assert "Changes from rank16:\n- Changed: `train.learning_rate`: 0.005 -> 0.002" in text
    assert "Baseline: no earlier run to compare with." in text


def test_based_on_refuses_unknown_runs(store):
    proc = run_cli("based-on", "nope", "nada")
    assert proc.returncode == 1 and "no run 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_fast_sql_collection_equals_the_mlflow_search_api(imported, store):
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
