"""import + changelog on what users' disks really hold: a kohya sd-scripts SDXL history (tests/real_layouts.py),
a real Hugging Face Trainer output folder, Lightning CSV logs, TensorBoard events, the user's eval files. Each
trap is asserted on the data, the Markdown and `changelog --format json`."""

import json
import pickle
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import run_cli
from real_layouts import KOHYA_RUNS, kohya_history, lightning_run
from tunelog import changelog as cl
from tunelog import tracking as t
from tunelog.importer import import_tree
from tunelog.tracking import Tracker


@pytest.fixture(scope="module")
def kohya_tree(tmp_path_factory):
    return kohya_history(tmp_path_factory.mktemp("kohya") / "runs")


@pytest.fixture(scope="module")
def kohya(kohya_tree, tmp_path_factory, empty_store_file):
    """The kohya history imported once into its own store, its changelog as data, Markdown and JSON."""
    where = tmp_path_factory.mktemp("kohya_store")
    shutil.copy(empty_store_file, where / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{where / 'mlflow.db'}")
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        proc = run_cli("import", kohya_tree, "--experiment", "sdxl")
        assert proc.returncode == 0, proc.stderr
        log = cl.collect_and_build(Tracker(), "sdxl")
        out = run_cli("changelog", "--experiment", "sdxl", "--format", "json", "--no-log")
        assert out.returncode == 0, out.stderr
        records = {r.name: r for r in Tracker().all_runs("sdxl")}
        yield log, cl.to_markdown(log), json.loads(out.stdout), records, proc


def _section(md: str, name: str) -> str:
    """One run's entry in the Markdown."""
    start = md.index(f"### {name}")
    end = md.find("\n### ", start + 1)
    return md[start : end if end > 0 else None]


def test_every_kohya_run_imported_with_its_config_from_either_toml_style(kohya):
    log, _, _, records, proc = kohya
    assert "imported 11 runs" in proc.stdout and "warning" not in proc.stderr
    sectioned, flat = records["01_base"].params, records["02_dim32"].params  # [sections] vs --output_config
    assert set(sectioned) == set(flat) and sectioned["optimizer_type"] == "AdamW8bit"
    assert flat["network_dim"] == "32" and sectioned["network_dim"] == "16"
    assert records["01_base"].tags["tunelog.import_readers"] == "eval-files,kohya,tensorboard"
    history = MlflowClient().get_metric_history(records["01_base"].run_id, "loss/average")  # from the events
    assert [m.step for m in history][:3] == [50, 100, 150] and len(history) == 19


def test_cut_short_oom_and_nan_runs_are_flagged_and_never_best(kohya):
    log, md, data, _, _ = kohya
    assert log.by_name("06_prodigy_cut").outcome == "incomplete"
    assert log.by_name("06_prodigy_cut").reason == "progress bar ends at step 301 of 950"
    assert log.by_name("08_res1536_oom").outcome == "oom"
    assert log.by_name("09_hot_lr").outcome == "diverged"
    assert log.by_name("09_hot_lr").reason == "progress bar shows avr_loss=nan at step 201"
    assert log.by_name("09_hot_lr").result == 0.99  # its eval.json scores above every other run...
    assert log.entry(log.best_id).name == "10_res768_buckets"  # ...and it is not the best
    assert "Best: **10_res768_buckets** (score 0.8)." in md
    assert "### 06_prodigy_cut — anomaly: incomplete, progress bar ends at step 301 of 950" in md
    entries = {e["name"]: e for e in data["entries"]}
    assert (entries["06_prodigy_cut"]["outcome"], entries["08_res1536_oom"]["outcome"]) == ("incomplete", "oom")
    assert entries["10_res768_buckets"]["best"] and not entries["09_hot_lr"]["best"]


def test_the_headline_is_the_users_eval_score_and_higher_is_better(kohya):
    log, md, _, records, _ = kohya
    assert (log.metric, log.direction) == ("score", t.MAXIMIZE)
    assert "Headline metric: `score` (higher is better)." in md
    finals = records["01_base"].metrics
    assert finals["score"] == 0.7 and finals["tunelog/score"] == -0.7
    assert not {"Encoder", "modules", "U-Net"} & set(finals)  # start-up counts are no metrics
    assert "Encoder" not in _section(md, "01_base")


def test_a_rerun_that_differs_only_in_names_paths_and_seed_is_a_repeat_and_its_neighbours_are_not(kohya):
    log, md, data, records, _ = kohya
    again = records["04_dim64_again"]
    assert again.params["output_name"] == "04_dim64_again" and again.params["seed"] == "1234"  # recorded...
    assert {"output_dir", "output_name", "logging_dir", "log_prefix", "seed"} <= set(
        again.tags[t.TAG_IDENTITY_KEYS].split(",")
    )
    assert log.by_name("04_dim64_again").repeat and log.by_name("04_dim64_again").parent_name == "03_dim64"
    assert "No changes: a repeat of 03_dim64." in _section(md, "04_dim64_again")
    assert not log.by_name("03_dim64").repeat and not log.by_name("05_prodigy").repeat
    assert "output_name" not in _section(md, "03_dim64")  # ...never a change
    assert all("output_dir" not in e.change for e in log.worked + log.didnt)
    entries = {e["name"]: e for e in data["entries"]}
    assert entries["04_dim64_again"]["changes"]["changed"] == {}


def test_the_other_eval_set_is_never_compared(kohya):
    log, md, data, records, _ = kohya
    other = log.by_name("11_res768_setB")
    assert records["11_res768_setB"].tags[t.TAG_EVAL_KEY] == "eval_set:portraits-v2"
    assert not other.comparable and other.parent_result is None and not other.best
    assert log.other_best == {"eval_set:portraits-v2": other.run_id}
    assert "(not comparable with its parent: eval set changed)" in _section(md, "11_res768_setB")
    assert data["other_best"] == {"eval_set:portraits-v2": other.run_id}


def test_a_one_key_change_is_measured_against_the_sane_twin_not_the_cut_short_run(kohya):
    log, md, data, _, _ = kohya
    constant = log.by_name("07_constant")  # 06 (same config as 05, cut short) ran just before it
    assert constant.parent_name == "05_prodigy" and constant.parent_result == 0.78
    said = "Changes vs 05_prodigy (06_prodigy_cut, the same config, was anomalous):\n- Changed: `lr_scheduler`"
    assert said in _section(md, "07_constant")
    effect = next(e for e in log.worked if e.change == "lr_scheduler cosine→constant")
    assert effect.run_names == ["07_constant"] and effect.mean_gain == pytest.approx(0.01)
    assert {e["name"]: e for e in data["entries"]}["07_constant"]["parent_name"] == "05_prodigy"


def test_co_changed_keys_are_one_change_set(kohya):
    log, md, _, _, _ = kohya
    labels = [e.change for e in log.worked]
    assert "network_alpha +8 + network_dim +16" in labels  # 02 moved rank and alpha together: one lesson
    assert not any(label in ("network_dim +16", "network_alpha +8") for label in labels)
    assert "| `network_alpha +8 + network_dim +16` | 1 | +0.04 |" in md


def test_phases_are_named_by_what_changed(kohya):
    log, md, data, _, _ = kohya
    groups = {e.name: e.group for e in log.entries}
    assert groups["02_dim32"] == groups["04_dim64_again"] == "Phase: rank + alpha"
    assert groups["05_prodigy"] == groups["09_hot_lr"] == "Phase: optimizer + learning rate"
    assert groups["10_res768_buckets"] == "Phase: resolution + bucketing"
    assert "## Phase: optimizer + learning rate" in md
    assert [p["name"] for p in data["phases"]] == [
        "Phase: rank + alpha",
        "Phase: optimizer + learning rate",
        "Phase: resolution + bucketing",
    ]


def test_importing_the_same_tree_again_adds_nothing(kohya_tree, store):
    first = import_tree(kohya_tree, Tracker(), "again")
    second = import_tree(kohya_tree, Tracker(), "again")
    assert len(first.imported) == len(KOHYA_RUNS) and second.imported == [] and len(second.skipped) == len(KOHYA_RUNS)


def test_ignore_keys_and_metrics_file_options(kohya_tree, tmp_path, store):
    tree = tmp_path / "runs"
    for name in ("03_dim64", "04_dim64_again"):
        shutil.copytree(kohya_tree / name, tree / name)
        (tree / name / "eval.json").rename(tree / name / "scores_final.json")
        text = (
            (tree / name / "config.toml")
            .read_text()
            .replace("save_every_n_steps = 400", f"save_every_n_steps = {len(name)}")
        )
        (tree / name / "config.toml").write_text(text)
    proc = run_cli("import", tree, "--experiment", "opts", "--metrics-file", "scores_*.json")
    assert proc.returncode == 0, proc.stderr
    log = cl.collect_and_build(Tracker(), "opts")
    assert log.metric == "score" and not log.by_name("04_dim64_again").repeat  # save_every_n_steps 8 -> 14
    proc = run_cli(
        "import", tree, "--experiment", "opts2", "--metrics-file", "scores_*.json", "--ignore-keys", "save_every_*"
    )
    assert proc.returncode == 0, proc.stderr
    assert cl.collect_and_build(Tracker(), "opts2").by_name("04_dim64_again").repeat


def test_hf_trainer_output_folders(tmp_path, store):
    from hf_run import train_hf

    tree = tmp_path / "hf"
    train_hf(tree / "full", max_steps=6)
    train_hf(tree / "stopped", max_steps=12, stop_at=4)
    marker = tmp_path / "unpickled"
    (tree / "full" / "training_args.bin").write_bytes(pickle.dumps(_Touch(str(marker))))
    report = import_tree(tree, Tracker(), "hf")
    assert sorted(report.imported) == ["full", "stopped"], report.warnings
    assert not marker.exists()  # training_args.bin is a pickle: never opened
    runs = {r.name: r for r in Tracker().all_runs("hf")}
    full = runs["full"]
    assert full.params["lora.r"] == "4" and full.params["lora.alpha"] == "8"
    assert full.params["lora.target_modules"] == "q_proj,v_proj" and full.params["train.max_steps"] == "6"
    assert full.tags["tunelog.checkpoints"] == "checkpoint-3, checkpoint-6"
    assert full.tags[t.TAG_METRIC] == "eval/loss" and full.tags[t.TAG_OUTCOME] == "ok"
    client = MlflowClient()
    assert [m.step for m in client.get_metric_history(full.run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [m.step for m in client.get_metric_history(full.run_id, "eval/loss")] == [3, 6]
    assert "train/mean_loss" in full.metrics and "train/learning_rate" not in full.metrics  # runs/ events not doubled
    stopped = runs["stopped"]
    assert stopped.tags[t.TAG_OUTCOME] == "incomplete"
    assert stopped.tags[t.TAG_REASON] == "trainer_state.json: global_step 4 of max_steps 12"


class _Touch:
    """A pickle that, if anyone ever loaded it, would leave a file behind."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_lightning_logs_and_tensorboard_events(tmp_path, store):
    from torch.utils.tensorboard import SummaryWriter

    tree = tmp_path / "runs"
    lightning_run(tree / "done", epochs_logged=10)
    lightning_run(tree / "stopped", epochs_logged=3)
    writer = SummaryWriter(log_dir=str(tree / "tb_only" / "runs" / "exp"))
    for step in range(1, 6):
        writer.add_scalar("val/loss", 1.0 / step, step, walltime=1_700_000_000 + step)
    writer.close()
    (tree / "tb_only" / "args.json").write_text(json.dumps({"lr": 0.01, "max_steps": 5}))
    shutil.copytree(tree / "tb_only", tree / "tb_cut")
    (tree / "tb_cut" / "args.json").write_text(json.dumps({"lr": 0.01, "max_steps": 50}))  # its events stop at 5
    report = import_tree(tree, Tracker(), "mixed", metric="val_loss")
    # every Lightning version is a run of its own (the abandoned version_0 too), named by its path
    versions = [f"{p}/lightning_logs/version_{v}" for p in ("done", "stopped") for v in (0, 1)]
    assert sorted(report.imported) == sorted([*versions, "tb_cut", "tb_only"]), report.warnings
    runs = {r.name: r for r in Tracker().all_runs("mixed")}
    done = runs["done/lightning_logs/version_1"]
    assert done.params["lr"] == "0.001" and done.params["args.lr"] == "0.001"  # a python tag, read as data
    assert done.tags[t.TAG_OUTCOME] == "ok" and done.metrics["val_loss"] == pytest.approx(0.12)
    assert {runs[v].tags["tunelog.project"] for v in versions} == {"done", "stopped"}
    stopped = runs["stopped/lightning_logs/version_1"]
    assert stopped.tags[t.TAG_OUTCOME] == "incomplete"
    # Lightning counts epochs from 0: epochs 0, 1 and 2 logged are 3 of the 10 asked for
    assert stopped.tags[t.TAG_REASON] == "log ends at epoch 3 of max_epochs=10"
    abandoned = runs["done/lightning_logs/version_0"]
    assert (abandoned.tags[t.TAG_OUTCOME], abandoned.tags[t.TAG_REASON]) == (
        "incomplete",
        "log ends at epoch 1 of max_epochs=10",
    )
    history = MlflowClient().get_metric_history(runs["tb_only"].run_id, "val/loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5] and history[0].timestamp == 1_700_000_001_000
    assert runs["tb_only"].start_ms == 1_700_000_001_000 and runs["tb_only"].params["lr"] == "0.01"
    assert runs["tb_only"].tags[t.TAG_OUTCOME] == "ok"
    assert (runs["tb_cut"].tags[t.TAG_OUTCOME], runs["tb_cut"].tags[t.TAG_REASON]) == (
        "incomplete",
        "log ends at step 5 of max_steps=50",
    )


def test_eval_jsonl_records_and_a_plain_logs_chatter(tmp_path, store):
    tree = tmp_path / "runs"
    for name, eval_set, scores in (
        ("a", "dev", [0.5, 0.6, 0.7]),
        ("b", "dev", [0.5, 0.55, 0.65]),
        ("c", "test", [0.9]),
    ):
        folder = tree / name
        folder.mkdir(parents=True)
        (folder / "args.json").write_text(json.dumps({"lr": 0.001 if name != "b" else 0.002}))
        (folder / "train.log").write_text(
            "create LoRA for Text Encoder: 264 modules.\nnumber of trainable params: 1234\n"
            "step=1 loss=2.0\nstep=2 loss=1.5\nFinal eval loss: 1.4\n"
        )
        records = [{"step": 10 * (i + 1), "accuracy": v, "eval_set": eval_set} for i, v in enumerate(scores)]
        (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
        (folder / "train.jsonl").write_text('{"text": "a training example"}\n')  # data, not metrics
    report = import_tree(tree, Tracker(), "jsonl", metric="accuracy")
    assert sorted(report.imported) == ["a", "b", "c"], report.warnings
    runs = {r.name: r for r in Tracker().all_runs("jsonl")}
    assert runs["a"].tags[t.TAG_DIRECTION] == t.MAXIMIZE  # from the name: accuracy, higher is better
    assert [m.step for m in MlflowClient().get_metric_history(runs["a"].run_id, "accuracy")] == [10, 20, 30]
    assert runs["a"].metrics["accuracy"] == 0.7 and runs["a"].metrics["final_eval_loss"] == 1.4
    assert not {"Encoder", "params"} & set(runs["a"].metrics)  # start-up counts, seen once, are no metrics
    log = cl.collect_and_build(Tracker(), "jsonl")
    assert log.entry(log.best_id).name == "a" and log.other_best == {"eval_set:test": runs["c"].run_id}


def test_runs_written_in_one_transaction_equal_runs_written_by_the_client(store):
    tracker = Tracker()
    metrics = [
        ("loss", 2.0, 1000, 1),
        ("loss", float("nan"), 1500, 3),
        ("loss", 1.0, 2000, 2),
        ("loss", 1.0, 2000, 2),  # an exact duplicate
        ("grad", float("inf"), 1000, 1),
        ("score", 0.5, 3000, 0),
    ]

    def run(run_id: str) -> t.FinishedRun:
        tags = {t.TAG_KIND: t.KIND_IMPORT, "tunelog.reason": ""}
        return t.FinishedRun(run_id, "r", 1000, 3000, "FAILED", {"lr": "0.1", "seed": "3"}, tags, metrics)

    written, _ = tracker.create_finished_runs("bulk", [run("a" * 32)])
    assert written == {"a" * 32: "a" * 32}  # the SQL road, with the id it was given
    by_client = tracker.create_finished_run("bulk", "r", 1000, 3000, "FAILED", run("x").params, run("x").tags, metrics)
    client = MlflowClient()
    a, b = client.get_run("a" * 32), client.get_run(by_client)
    assert (a.info.status, a.info.start_time, a.info.end_time, a.info.run_name) == (
        b.info.status,
        b.info.start_time,
        b.info.end_time,
        b.info.run_name,
    )
    assert a.info.artifact_uri == b.info.artifact_uri.replace(by_client, "a" * 32)
    assert a.data.params == b.data.params and a.data.tags == b.data.tags
    assert str(a.data.metrics) == str(b.data.metrics)  # the latest: NaN at step 3, inf as the store keeps it

    def history(run_id: str, key: str) -> list:
        return sorted((m.step, m.timestamp, str(m.value)) for m in client.get_metric_history(run_id, key))

    for key in ("loss", "grad", "score"):
        assert history("a" * 32, key) == history(by_client, key)
    records = {r.run_id: r for r in tracker.all_runs("bulk")}
    assert str(records["a" * 32].metrics) == str(records[by_client].metrics)


def test_kohyas_loss_epoch_is_a_metric_not_the_epoch_reached(tmp_path, store):
    """kohya's TensorBoard log writes `loss/epoch` (the epoch's mean loss, at step = the epoch number) beside
    `loss/current`: a completed run of max_train_epochs=14 is ok, never `incomplete, log ends at epoch 0.07`."""
    from torch.utils.tensorboard import SummaryWriter

    from tunelog.importer import import_tree

    folder = tmp_path / "sdxl" / "run_a"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(
        'pretrained_model_name_or_path = "sdxl.safetensors"\nnetwork_dim = 32\nmax_train_epochs = 14\n'
        'unet_lr = 0.0001\noutput_name = "run_a"\n'
    )
    writer = SummaryWriter(log_dir=str(folder / "logs" / "run_a_20250101" / "network_train"))
    means = {}
    for epoch in range(1, 15):
        for step in range((epoch - 1) * 10 + 1, epoch * 10 + 1):
            writer.add_scalar("loss/current", 0.1 - 0.002 * epoch, step)
        means[epoch] = 0.1 - 0.002 * epoch
        writer.add_scalar("loss/epoch", means[epoch], epoch)
    writer.close()
    report = import_tree(tmp_path / "sdxl", Tracker(), "kohya-epoch")
    assert report.imported == ["run_a"], report.warnings
    (run,) = Tracker().all_runs("kohya-epoch")
    assert run.tags["tunelog.outcome"] == "ok", run.tags.get("tunelog.reason")
    history = MlflowClient().get_metric_history(run.run_id, "loss/epoch")
    assert {m.step: round(m.value, 6) for m in history} == {k: round(v, 6) for k, v in means.items()}


TRL_CSV = Path(__file__).resolve().parent.parent.parent / "shared/real-runs/other/AimeeAyat__ATML-PA5"


@pytest.mark.skipif(not TRL_CSV.is_dir(), reason=f"no real TRL DPO/PPO folders at {TRL_CSV}")
def test_trl_dpo_and_ppo_runs_with_a_training_metrics_csv_are_runs(tmp_path, store):
    """Real TRL DPO and PPO LoRA folders (`training_metrics.csv` beside the adapter), read in place: each a run,
    every finite cell a point at its `step`, the adapter's rank as a param; PPO's on-and-off NaN statistics are
    no divergence."""
    import csv
    import math

    report = import_tree(TRL_CSV, t.Tracker(), "trl-csv")
    assert len(report.imported) == 2, report.warnings + [w for _, w in report.not_runs]
    client = MlflowClient()
    for run in t.Tracker().all_runs("trl-csv"):
        folder = TRL_CSV / run.name  # its path under the imported root
        rows = list(csv.DictReader((folder / "training_metrics.csv").open()))
        expected = {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss") not in (None, "")}
        expected = {k: v for k, v in expected.items() if math.isfinite(v)}
        if expected:
            history = {m.step: m.value for m in client.get_metric_history(run.run_id, "train/loss")}
            assert history == expected, run.name
        config = json.loads((folder / "adapter_config.json").read_text())
        assert run.params["lora.r"] == str(config["r"]) and run.tags["tunelog.outcome"] == "ok", run.tags


def _trainer_state(folder: Path, losses: list[float]) -> None:
    """A Trainer's own record: a loss per step, at its max_steps."""
    folder.mkdir(parents=True, exist_ok=True)
    history = [{"step": i + 1, "loss": v, "epoch": (i + 1) / len(losses)} for i, v in enumerate(losses)]
    state = {"global_step": len(losses), "max_steps": len(losses), "num_train_epochs": 1, "log_history": history}
    (folder / "trainer_state.json").write_text(json.dumps(state))


def test_a_run_folder_inside_a_run_folder_is_a_run_of_its_own(tmp_path, store):
    """A project whose root is a Trainer run and whose `language_model/` and `translation_model/` each hold
    another: three runs, each with its own steps only; the outer run's TensorBoard `runs/` is no fourth."""
    from torch.utils.tensorboard import SummaryWriter

    project = tmp_path / "tree" / "project"
    _trainer_state(project, [3.0, 2.5, 2.0])
    _trainer_state(project / "language_model", [5.0, 4.0, 3.5, 3.0])
    _trainer_state(project / "translation_model", [7.0, 6.0])
    with SummaryWriter(str(project / "runs" / "Dec07_host")) as writer:  # what the outer Trainer logged
        for step in (1, 2, 3):
            writer.add_scalar("train/loss", 3.0 - step / 2, step)
    report = import_tree(tmp_path / "tree", Tracker(), "nested")
    expected = ["project", "project/language_model", "project/translation_model"]
    assert sorted(report.imported) == expected, (report.warnings, report.not_runs)
    client = MlflowClient()
    for run in Tracker().all_runs("nested"):
        state = json.loads((tmp_path / "tree" / run.name / "trainer_state.json").read_text())
        history = [(m.step, m.value) for m in client.get_metric_history(run.run_id, "train/loss")]
        assert history == [(h["step"], h["loss"]) for h in state["log_history"]], run.name
        assert run.tags[t.TAG_OUTCOME] == "ok", run.tags.get(t.TAG_REASON)
    assert not import_tree(tmp_path / "tree", Tracker(), "nested").imported
