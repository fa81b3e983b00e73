"""promote (champion and challenger), load_model in a fresh process, and reproduce, on a real registry."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import (
    DEMO,
    _await_server,
    _kill_group,
    ask,
    demo_raw,
    free_port,
    mlflow_models_serve,
    subprocess_env,
    write_spec,
)
from tunelog.errors import TunelogError
from tunelog.promote import load_model, promote
from tunelog.reproduce import reproduce
from tunelog.spec import load_spec
from tunelog.tracking import TAG_BASED_ON, Tracker, model_adapter
from tunelog.train import run_training


def short_run(tmp_path, name, eval_file=None, tokenizer=None, train_file=None, system_metrics=True, **train):
    raw = demo_raw(eval_every=None, **train)
    if eval_file:
        raw["data"]["eval"] = str(eval_file)
    if tokenizer:
        raw["model"]["tokenizer"] = str(tokenizer)
    if train_file:
        raw["data"]["train"] = str(train_file)
    spec = load_spec(write_spec(tmp_path / f"{name}.yaml", raw))
    spec = spec.with_overrides({"tracking.run_name": name, "tracking.system_metrics": system_metrics})
    return run_training(spec, Tracker())


def test_promote_keeps_the_better_champion_and_never_registers_twice(tmp_path, store):
    good_id, good = short_run(tmp_path, "good", max_steps=30)
    bad_id, bad = short_run(tmp_path, "bad", max_steps=2)
    assert good.metrics["eval/loss"] < bad.metrics["eval/loss"]
    tracker = Tracker()
    first = promote(tracker, tracker.get_run(good_id), "demo-lora")
    second = promote(tracker, tracker.get_run(bad_id), "demo-lora")
    assert first.created and first.champion and second.created and not second.champion
    client = MlflowClient(store)
    champion = client.get_model_version_by_alias("demo-lora", "champion")
    assert champion.run_id == good_id and champion.tags["metric"] == "eval/loss"
    assert float(champion.tags["metric_value"]) == pytest.approx(good.metrics["eval/loss"])
    assert champion.tags["spec_hash"] and champion.tags["base_model"].startswith("tiny:")
    assert "### good" in champion.description
    assert client.get_model_version("demo-lora", second.version).tags["challenger"] == "true"
    again = promote(tracker, tracker.get_run(good_id), "demo-lora")
    assert not again.created and again.version == first.version
    assert len(client.search_model_versions("name = 'demo-lora'")) == 2
    # a weak champion, then a lower number scored on another eval set: not comparable, so it must not win
    promote(tracker, tracker.get_run(bad_id), "weak-lora")
    other_set = tmp_path / "other_eval.txt"
    other_set.write_text("\n".join((DEMO / "data/general/train.txt").read_text().splitlines()[:40]))
    other_id, other = short_run(tmp_path, "other-set", max_steps=30, eval_file=other_set)
    assert other.metrics["eval/loss"] < bad.metrics["eval/loss"]
    third = promote(tracker, tracker.get_run(other_id), "weak-lora")
    assert third.created and not third.champion and not third.comparable
    assert "not comparable" in third.summary()
    assert client.get_model_version_by_alias("weak-lora", "champion").run_id == bad_id


def test_champion_loads_in_a_fresh_process_with_the_runs_logits(tmp_path, store):
    """Loaded in a fresh process in another folder after the training machine's files are gone."""
    from peft import PeftModel

    from tunelog.training.model import _tiny_model, load_tokenizer

    machine_a = tmp_path / "machine_a"  # the training machine's files, gone before the model is loaded
    machine_a.mkdir()
    shutil.copy(DEMO / "tokenizer.json", machine_a / "tokenizer.json")
    run_id, _ = short_run(tmp_path, "champ", max_steps=8, tokenizer=machine_a / "tokenizer.json")
    tracker = Tracker()
    promote(tracker, tracker.get_run(run_id), "logits-model")
    spec = load_spec(tmp_path / "champ.yaml")
    tokenizer = load_tokenizer(spec)
    model_id = tracker.get_run(run_id).tags["tunelog.model_id"]  # the adapter, stored once in the run's model
    adapter = str(model_adapter(model_id, tmp_path / "dl", store))
    reference = PeftModel.from_pretrained(_tiny_model(spec, tokenizer), adapter).eval()
    ids = tokenizer(["Æ e heime i dag ."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
    script = (
        "import sys, torch, tunelog\n"
        "m = tunelog.load_model('models:/logits-model@champion')\n"
        "ids = m.tokenizer(['Æ e heime i dag .'], return_tensors='pt')['input_ids']\n"
        "with torch.no_grad():\n    torch.save(m.model(input_ids=ids).logits, sys.argv[1])\n"
    )
    out = tmp_path / "logits.pt"
    shutil.rmtree(machine_a)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        capture_output=True,
        text=True,
        env=subprocess_env(store),
        timeout=600,
        cwd=elsewhere,  # another folder (and, for all the run knows, another machine)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.equal(torch.load(out), expected)
    assert not torch.equal(expected, _tiny_model(spec, tokenizer)(input_ids=ids).logits)  # the adapter matters


def test_the_champion_is_an_mlflow_model_pyfunc_loads_and_mlflow_models_serve_answers(tmp_path, store):
    """What promote registered opens with MLflow's own tools: `mlflow.pyfunc.load_model` generates text,
    and `mlflow models serve --env-manager local` answers /invocations on 127.0.0.1."""
    import json

    import mlflow

    run_id, result = short_run(tmp_path, "served", max_steps=30)
    tracker = Tracker()
    promote(tracker, tracker.get_run(run_id), "served-lora")
    version = MlflowClient().get_model_version_by_alias("served-lora", "champion")
    assert version.source == f"models:/{tracker.get_run(run_id).tags['tunelog.model_id']}"
    (logged,) = mlflow.search_logged_models(
        filter_string=f"source_run_id = '{run_id}'",
        experiment_ids=[tracker.get_run(run_id).experiment_id],
        output_format="list",
    )
    assert dict((m.key, m.value) for m in logged.metrics)["eval/loss"] == result.metrics["eval/loss"]
    assert [v["name"] for v in json.loads(logged.tags["mlflow.modelVersions"])] == ["served-lora"]  # the Models tab
    assert "Final metrics" in version.description and "system/" not in version.description  # the machine's figures
    from tunelog.util.answers import generate

    ours = load_model("models:/served-lora@champion")
    (expected,) = generate(ours.model, ours.tokenizer, ["Æ e heime"], ours.device, 6)  # what samples.md would say
    model = mlflow.pyfunc.load_model("models:/served-lora@champion")
    (text,) = model.predict(["Æ e heime"], params={"max_new_tokens": 6})
    assert text == expected and text and not text.startswith("Æ e heime")  # the answer, not the prompt echoed
    with mlflow_models_serve("models:/served-lora@champion", tmp_path / "serve.log", store) as url:
        (served,) = ask(url, {"inputs": ["Æ e heime"], "params": {"max_new_tokens": 6}})["predictions"]
        assert served == expected
        chat = ask(url, {"messages": [{"role": "user", "content": "Æ e heime"}], "max_new_tokens": 6})
        assert chat["choices"][0]["message"] == {"role": "assistant", "content": expected}
    assert "Loading weights" not in (tmp_path / "serve.log").read_text()  # no bar on every load


def test_a_plain_adapter_folder_still_promotes_and_loads(tmp_path, store, monkeypatch):
    """Runs from before MLflow models (and stages on merged earlier stages) hold a plain `adapter/` folder:
    promote registers that folder and load_model opens it; system metrics switched off stay off."""
    import tunelog.trainers.hf as hf

    monkeypatch.setattr(hf, "base_reference", lambda spec, tokenizer: None)  # the path such runs take
    run_id, _ = short_run(tmp_path, "plain", max_steps=4, system_metrics=False)
    tracker = Tracker()
    record = tracker.get_run(run_id)
    assert "tunelog.model_id" not in record.tags and not any(k.startswith("system/") for k in record.metrics)
    promote(tracker, record, "plain-lora")
    assert (
        MlflowClient()
        .get_model_version_by_alias("plain-lora", "champion")
        .source.endswith(f"{run_id}/artifacts/adapter")
    )

    loaded = load_model("models:/plain-lora@champion")
    assert type(loaded.model).__name__ == "PeftModelForCausalLM"


def test_reproduce_from_a_moved_checkout_gives_the_same_final_loss(tmp_path, store, monkeypatch):
    """The logged spec names data relative to the project root: a checkout moved (or cloned on another
    machine) reproduces from its own root; from a folder without the data, the error names the file."""
    checkout = tmp_path / "machine_a" / "project"
    (checkout / "data").mkdir(parents=True)
    shutil.copy(DEMO / "data/general/train.txt", checkout / "data" / "train.txt")
    monkeypatch.chdir(checkout)
    run_id, result = short_run(checkout, "orig", max_steps=12, train_file="data/train.txt")
    logged = Path(Tracker().download(run_id, "spec.yaml", str(tmp_path / "dl"))).read_text()
    assert "train: data/train.txt" in logged and str(checkout) not in logged
    moved = tmp_path / "machine_b" / "project"
    moved.parent.mkdir()
    checkout.rename(moved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(TunelogError) as missing:
        reproduce(Tracker(), run_id)
    size = (moved / "data" / "train.txt").stat().st_size
    assert f"data.train: {elsewhere}/data/train.txt not found (the run read {size} bytes, sha256" in str(missing.value)
    assert "--set FIELD=PATH" in str(missing.value)
    monkeypatch.chdir(moved)
    new_id, pairs = reproduce(Tracker(), run_id)
    assert new_id != run_id
    original, again = pairs["train/final_loss"]
    assert abs(original - again) <= 1e-6
    assert Tracker().get_run(new_id).tags[TAG_BASED_ON] == run_id


def test_tunelog_serve_from_a_fresh_shell_finds_the_store_and_answers(tmp_path, monkeypatch):
    """The README's serve line in a new shell (no MLFLOW_TRACKING_URI): `tunelog serve NAME@champion` serves from
    the project's mlruns/mlflow.db and leaves no stray store in the folder; an unknown name is one line."""
    import time

    store_uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    monkeypatch.chdir(tmp_path)
    run_id, _ = short_run(tmp_path, "fresh", max_steps=4)
    tracker = Tracker()
    promote(tracker, tracker.get_run(run_id), "fresh-lora")
    env = {k: v for k, v in subprocess_env(store_uri).items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = os.pathsep.join(["/usr/bin", "/bin"])  # a shell that never activated .venv: no uvicorn on PATH
    unknown = subprocess.run(
        [sys.executable, "-m", "tunelog.cli", "serve", "nope@champion"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1 and "nope" in unknown.stderr
    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (closed below)
    cmd = [sys.executable, "-m", "tunelog.cli", "serve", "fresh-lora@champion", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert _await_server(proc, url, port, time.monotonic() + 300), (tmp_path / "serve.log").read_text()[-2000:]
        (served,) = ask(url, {"inputs": ["Æ e heime"], "params": {"max_new_tokens": 3}})["predictions"]
        assert isinstance(served, str)  # an answer (4 steps of training may say nothing but spaces)
    finally:
        _kill_group(proc)
        log.close()
    assert not (tmp_path / "mlflow.db").exists()  # no stray store beside mlruns/
