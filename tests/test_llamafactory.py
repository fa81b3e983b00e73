"""LLaMA-Factory as its users drive it: `llamafactory-cli train cfg.yaml key=value ...` as a command trainer, and
its output folders imported. The recordings in ../shared/llamafactory (the real CLI's console, byte for byte, and
its output folders) are read in place; every expectation is computed here from the output folder's own files
(`trainer_state.json`, `trainer_log.jsonl`, the model card), never typed in. The CLI itself is replayed by
tests/fixtures/llamafactory_replay.py (a stand-in, named so); `test_real_llamafactory_cli` runs the real one
where TUNELOG_LLAMAFACTORY_CLI points at it."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from conftest import REPO
from tunelog.importer import import_tree
from tunelog.logs.console import Console, clean
from tunelog.logs.parse import LogParser
from tunelog.spec import load_spec
from tunelog.tracking import Tracker
from tunelog.train import run_training

RECORDED = REPO.parent / "shared" / "llamafactory"
pytestmark = pytest.mark.skipif(not RECORDED.is_dir(), reason=f"no LLaMA-Factory recordings at {RECORDED}")
JUNK = {"trainer.py", "rms_norm_eps", "num_key_value_heads", "Epochs", "hidden_size", "current_steps", "percentage"}


def state(run: str) -> dict:
    return json.loads((RECORDED / "runs" / run / "trainer_state.json").read_text())


def expected_series(run: str) -> dict[str, dict[int, float]]:
    """The trainer's own log_history: train loss and eval loss by step, at full precision."""
    out: dict[str, dict[int, float]] = {"train/loss": {}, "eval/loss": {}}
    for entry in state(run)["log_history"]:
        if "loss" in entry:
            out["train/loss"][entry["step"]] = entry["loss"]
        if "eval_loss" in entry:
            out["eval/loss"][entry["step"]] = entry["eval_loss"]
    return out


def card_hyperparameters(run: str) -> dict[str, str]:
    text = (RECORDED / "runs" / run / "README.md").read_text()
    block = text.split("### Training hyperparameters", 1)[1].split("###", 1)[0]
    return dict(line[2:].split(": ", 1) for line in block.splitlines() if line.startswith("- "))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lf_spec(tmp_path: Path, run: str, cli: list[str] | None = None, max_steps: int = 40, **env) -> object:
    """The spec a LLaMA-Factory user writes: the CLI, their YAML, the spec's values as `key=value` overrides.
    `cli`: the real `llamafactory-cli` (tmp_path/cfg.yaml written by the caller), else the replay."""
    if cli is None:
        shutil.copy(RECORDED / "kit" / "cfg.yaml", tmp_path / "cfg.yaml")
        cli = ["{python}", str(REPO / "tests/fixtures/llamafactory_replay.py")]
    raw = {
        "model": {"name": "tiny-llama"},
        "data": {"train": str(tmp_path / "tiny_alpaca.json")},
        "tracking": {"experiment": "lf", "metric": "eval/loss", "direction": "minimize"},
        "train": {"learning_rate": 1e-3, "batch_size": 8, "max_steps": max_steps},
        "lora": {"r": 8, "alpha": 16},
        "trainer": {
            "type": "command",
            "argv": [
                *cli,
                "train",
                "cfg.yaml",
                "learning_rate={train.learning_rate}",
                "lora_rank={lora.r}",
                "lora_alpha={lora.alpha}",
                "per_device_train_batch_size={train.batch_size}",
                "max_steps={train.max_steps}",
                "output_dir={output_dir}",
            ],
            "env": {"TUNELOG_LF_RECORDING": str(RECORDED), "TUNELOG_LF_RUN": run, **env},
        },
    }
    (tmp_path / "tiny_alpaca.json").write_text(json.dumps([{"instruction": "a", "input": "b", "output": "c"}] * 200))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(tmp_path / "spec.yaml")


def test_console_steps_are_the_trainers_and_chatter_is_no_metric():
    """Every log dict of the recorded console at the step trainer_state.json gives it; no start-up number."""
    text = (RECORDED / "console" / "alone1.log").read_bytes().decode("utf-8", "replace")
    console, parser = Console(), LogParser()
    seen: dict[str, dict[int, float]] = {"loss": {}, "eval_loss": {}}
    keys = set()
    for line in text.replace("\r", "\n").splitlines():
        line = clean(line)
        if console.observe(line):
            continue
        _, named, metrics = parser.parse_line(line)
        keys |= set(metrics)
        if "loss" in metrics or "eval_loss" in metrics and "train_runtime" not in metrics:
            step = console.step_of(named, metrics)
            for key in ("loss", "eval_loss"):
                if key in metrics:
                    seen[key].setdefault(step, metrics[key])
    expected = expected_series("alone1")
    assert sorted(seen["loss"]) == sorted(expected["train/loss"])
    assert sorted(seen["eval_loss"]) == sorted(expected["eval/loss"])  # 10, 20, 30, 40: not 21/32/43/54
    for step, value in expected["train/loss"].items():  # the console's 4 digits of the same number
        assert seen["loss"][step] == pytest.approx(value, rel=1e-3)
    assert not keys & JUNK
    assert clean("\x1b[A{'eval_loss': '5.664'}") == "{'eval_loss': '5.664'}"  # no escape reaches a reason


def test_command_run_records_what_the_trainer_recorded(tmp_path, store):
    spec = lf_spec(tmp_path, "alone1")
    run_id, result = run_training(spec, Tracker())
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert result.outcome == "ok", result.reason
    expected = expected_series("alone1")
    for key, points in expected.items():  # every step and value of the trainer's own record, nothing else
        history = {m.step: m.value for m in client.get_metric_history(run_id, key)}
        assert history == points, key
    assert result.steps == state("alone1")["global_step"]
    assert result.metrics["eval/loss"] == expected["eval/loss"][max(expected["eval/loss"])]
    assert not set(run.data.metrics) & (JUNK | {"loss", "eval_loss"})  # the console's rounded copies replaced
    card = card_hyperparameters("alone1")
    params = run.data.params
    assert params["train.seed"] == card["seed"] and params["train.schedule"] == card["lr_scheduler_type"]
    assert params["train.optimizer"] == "adamw_torch_fused" and "ADAMW_TORCH_FUSED" in card["optimizer"]
    assert float(params["train.learning_rate"]) == float(card["learning_rate"])
    assert "train.precision" not in params  # a spec default the CLI was never given is not what ran
    record = {a.path for a in client.list_artifacts(run_id, "record")}
    assert {"record/trainer_state.json", "record/trainer_log.jsonl", "record/README.md", "record/cfg.yaml"} <= record
    assert "output_dir" in run.data.tags["tunelog.identity_keys"] or "lf.output_dir" in run.data.tags.get(
        "tunelog.identity_keys", ""
    )
    kept = Path(client.download_artifacts(run_id, "outputs/adapter_model.safetensors", str(tmp_path / "dl")))
    assert sha(kept) == sha(RECORDED / "runs/alone1/adapter_model.safetensors")


def test_a_run_cut_short_keeps_its_newest_checkpoint_and_reads_incomplete(tmp_path, store):
    """save_steps 10, stopped near step 25: checkpoint-20's adapter is the run's, never checkpoint-10's."""
    spec = lf_spec(tmp_path, "alone3_cut", TUNELOG_LF_EXIT="130")
    run_id, result = run_training(spec, Tracker())
    client = MlflowClient(store)
    log = [json.loads(line) for line in (RECORDED / "runs/alone3_cut/trainer_log.jsonl").read_text().splitlines()]
    assert result.outcome == "failed" and "KeyboardInterrupt" in result.reason  # the console says why
    assert f"current_steps {log[-1]['current_steps']} of total_steps 200" in result.reason  # the record how far
    history = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}
    assert history == {e["current_steps"]: e["loss"] for e in log if "loss" in e}
    kept = Path(client.download_artifacts(run_id, "outputs/adapter_model.safetensors", str(tmp_path / "dl")))
    assert sha(kept) == sha(RECORDED / "runs/alone3_cut/checkpoint-20/adapter_model.safetensors")
    assert sha(kept) != sha(RECORDED / "runs/alone3_cut/checkpoint-10/adapter_model.safetensors")


def test_import_reads_what_ran_and_a_saved_console_adds_nothing(tmp_path, store):
    """alone2 (LR 5e-3, r 16) has its console saved beside it as train.log; alone4 ran at LR 100."""
    tree = tmp_path / "tree"
    for run in ("alone1", "alone2", "alone4_lr100"):
        shutil.copytree(RECORDED / "runs" / run, tree / run)
    report = import_tree(tree, Tracker(), "lf-import")
    assert sorted(report.imported) == ["alone1", "alone2", "alone4_lr100"], report.warnings
    client = MlflowClient(store)
    runs = {
        r.data.tags["tunelog.name"]: r
        for r in client.search_runs([client.get_experiment_by_name("lf-import").experiment_id])
    }
    for name, run in runs.items():
        card = card_hyperparameters(name)
        assert float(run.data.params["train.learning_rate"]) == float(card["learning_rate"]), name
        assert run.data.params["train.seed"] == card["seed"]
        expected = expected_series(name)
        for key, points in expected.items():
            assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)} == points, (name, key)
        assert not set(run.data.metrics) & (JUNK | {"loss", "eval_loss", "grad_norm"}), name  # train.log added none


@pytest.mark.skipif(not os.environ.get("TUNELOG_LLAMAFACTORY_CLI"), reason="TUNELOG_LLAMAFACTORY_CLI names no real CLI")
def test_real_llamafactory_cli(tmp_path, store):
    """The real CLI (its own venv), on the kit's tiny model and data: the run's record is what the CLI wrote."""
    cli = os.environ["TUNELOG_LLAMAFACTORY_CLI"]
    assets = tmp_path / "assets"
    python = Path(cli).parent / "python"
    subprocess.run([str(python), str(RECORDED / "kit/make_assets.py"), str(REPO), str(assets)], check=True)
    cfg = yaml.safe_load((RECORDED / "kit/cfg.yaml").read_text())
    cfg.update({"model_name_or_path": str(assets / "tiny-llama"), "dataset_dir": str(assets / "data")})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    spec = lf_spec(tmp_path, "real", cli=[cli], max_steps=20, HF_HUB_OFFLINE="1")
    run_id, result = run_training(spec, Tracker())
    client = MlflowClient(store)
    assert result.outcome == "ok", result.reason
    state_file = client.download_artifacts(run_id, "record/trainer_state.json", str(tmp_path / "dl"))
    logged = json.loads(Path(state_file).read_text())["log_history"]
    history = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}
    assert history == {e["step"]: e["loss"] for e in logged if "loss" in e} and max(history) == 20
    card = client.download_artifacts(run_id, "record/README.md", str(tmp_path / "dl"))
    assert "- seed: 42" in Path(card).read_text() and client.get_run(run_id).data.params["train.seed"] == "42"


def test_the_champion_is_the_final_adapter_and_loads_both_ways(tmp_path, store):
    """Promoted from a LLaMA-Factory run: tunelog.load_model and mlflow.pyfunc open it, with the root's weights."""
    import mlflow
    import torch
    from safetensors.torch import load_file

    import tunelog
    from tunelog.promote import best_run, promote

    assets = tmp_path / "assets"
    subprocess.run([sys.executable, str(RECORDED / "kit/make_assets.py"), str(REPO), str(assets)], check=True)
    spec = lf_spec(tmp_path, "alone1", TUNELOG_LF_BASE=str(assets / "tiny-llama"))
    run_id, result = run_training(spec, Tracker())
    assert result.outcome == "ok", result.reason
    tracker = Tracker()
    promotion = promote(tracker, best_run(tracker, "lf"), "lf-lora")
    assert promotion.champion and promotion.run_id == run_id
    loaded = tunelog.load_model("models:/lf-lora@champion")
    final = load_file(str(RECORDED / "runs/alone1/adapter_model.safetensors"))
    weights = {k: v for k, v in loaded.model.state_dict().items() if "lora_" in k}
    name = next(k for k in final if "lora_A" in k)
    (match,) = [
        v for k, v in weights.items() if k.replace(".default", "").endswith(name.split("base_model.model.")[-1])
    ]
    assert torch.equal(match.cpu(), final[name])  # the root's (final) adapter, not an earlier checkpoint's
    model = mlflow.pyfunc.load_model("models:/lf-lora@champion")
    (answer,) = model.predict(["Snu setningen"], params={"max_new_tokens": 4})
    assert isinstance(answer, str)


def test_lint_plans_without_what_the_config_holds_out(tmp_path):
    """cfg.yaml's `val_size` holds a share of the rows out for evaluation: lint's plan counts what trains."""
    from tunelog.lint import lint_spec

    spec = lf_spec(tmp_path, "alone1")
    share = yaml.safe_load((tmp_path / "cfg.yaml").read_text())["val_size"]
    rows = len(json.loads((tmp_path / "tiny_alpaca.json").read_text()))
    report = lint_spec(spec)
    assert report.plan["n_samples"] == rows - round(rows * share)
    assert any(f.rule == "held-out" for f in report.findings)


REAL_LF = REPO.parent / "shared" / "real-runs" / "other" / "xueh88401-web__qwen2.5-7b-medical-finetune"


@pytest.mark.skipif(not REAL_LF.is_dir(), reason=f"no real LLaMA-Factory folder at {REAL_LF}")
def test_a_real_llamafactory_folder_without_trainer_state_reads_its_log_and_its_yaml(tmp_path, store):
    """A real run folder (../shared/real-runs/other): `trainer_log.jsonl` at `current_steps`, its YAML (named as
    the user named it) as params under tunelog's names, read in place."""
    config = next(yaml.safe_load(p.read_text()) for p in REAL_LF.glob("*.yaml"))
    log = [json.loads(line) for line in (REAL_LF / "trainer_log.jsonl").read_text().splitlines() if line.strip()]
    report = import_tree(REAL_LF, Tracker(), "lf-real")
    assert len(report.imported) == 1, report.warnings
    (run,) = Tracker().all_runs("lf-real")
    assert run.params["lora.r"] == str(config["lora_rank"]) and run.params["lf.stage"] == config["stage"]
    assert float(run.params["train.learning_rate"]) == float(config["learning_rate"])
    history = {m.step: m.value for m in MlflowClient().get_metric_history(run.run_id, "train/loss")}
    assert history == {e["current_steps"]: e["loss"] for e in log if "loss" in e}
    assert "lf.output_dir" in run.tags["tunelog.identity_keys"]


REAL_UI = REPO.parent / "shared" / "real-runs" / "other" / "LzZzZx328__finetune_LLM"


@pytest.mark.skipif(not REAL_UI.is_dir(), reason=f"no real LLaMA-Factory web-UI folder at {REAL_UI}")
def test_a_real_llamafactory_ui_log_reads_at_the_trainers_steps(tmp_path, store):
    """`running_log.txt` (the web UI's console: log dicts after the logger's prefix, transformers 4's start-up)
    and its saved `SECTION.NAME` YAML: the loss at epoch x (Total optimization steps / Num Epochs), the LR and
    rank as params; the logger's own numbers are no metrics."""
    import re

    text = (REAL_UI / "running_log.txt").read_text()
    total = int(re.search(r"Total optimization steps = ([\d,]+)", text).group(1).replace(",", ""))
    epochs = int(re.search(r"Num Epochs = ([\d,]+)", text).group(1).replace(",", ""))
    dicts = [m.group(1) for m in re.finditer(r">> (\{'loss'.*\})", text)]
    expected = {}
    for d in dicts:  # read here with the standard library's literal reader, as data
        import ast

        entry = ast.literal_eval(d)
        expected.setdefault(max(1, round(entry["epoch"] * total / epochs)), entry["loss"])
    config = yaml.safe_load(next(REAL_UI.glob("*.yaml")).read_text())
    report = import_tree(REAL_UI, Tracker(), "lf-ui")
    assert len(report.imported) == 1, report.warnings + [w for _, w in report.not_runs]
    (run,) = Tracker().all_runs("lf-ui")
    history = {m.step: m.value for m in MlflowClient().get_metric_history(run.run_id, "train/loss")}
    assert history == expected
    assert run.params["train.learning_rate"] == str(config["train.learning_rate"])
    assert run.params["lora.r"] == str(config["train.lora_rank"])
    assert not any(k.endswith(".py") for k in run.metrics)
