"""`tunelog init` and `tunelog configs ls`: a starter spec for your own model and data that lint passes."""

import pytest

from conftest import DEMO, REPO, run_cli
from tunelog.lint import lint_spec
from tunelog.spec import load_spec


@pytest.mark.parametrize("preset", ["lora-small", "qlora-7b", "command"])
def test_each_preset_writes_a_spec_that_lint_passes(tmp_path, preset):
    path = tmp_path / "project" / "spec.yaml"
    path.parent.mkdir()
    data = tmp_path / "project" / "train.txt"
    data.write_text((DEMO / "data/general/train.txt").read_text())
    proc = run_cli("init", "--model", "my-org/my-model", "--data", data, "--preset", preset, "-o", path)
    assert proc.returncode == 0, proc.stderr
    assert "0 errors, 0 warnings" in proc.stdout
    spec = load_spec(path)
    assert spec.data.train == "train.txt"  # relative: the project folder can move
    assert not lint_spec(spec).findings or all(f.severity == "info" for f in lint_spec(spec).findings)
    assert set(spec.configs) == {"baseline", "wider", "gentler"} and spec.search and spec.rules
    assert (spec.trainer.type == "command") == (preset == "command")
    assert spec.model.load_in_4bit == (preset == "qlora-7b")
    listed = run_cli("configs", "ls", path)
    assert listed.returncode == 0 and "wider" in listed.stdout and "lora.r=" in listed.stdout


def test_init_does_not_overwrite_without_force(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("mine")
    proc = run_cli("init", "--model", "m", "--data", DEMO / "data/general/train.txt", "-o", path)
    assert proc.returncode == 1 and "exists; pass --force" in proc.stderr and path.read_text() == "mine"


@pytest.mark.parametrize("preset", ["lora-small", "qlora-7b"])
def test_init_with_a_gguf_file_names_it_and_lint_passes_without_converting(tmp_path, preset, monkeypatch):
    monkeypatch.setenv("TUNELOG_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "spec.yaml"
    data = REPO / "examples/smollm2/train.jsonl"
    proc = run_cli(
        "init", "--model", tmp_path, "--gguf", "m.Q4_K_M.gguf", "--data", data, "--preset", preset, "-o", path
    )
    assert proc.returncode == 0 and "0 errors, 0 warnings" in proc.stdout, proc.stdout + proc.stderr
    spec = load_spec(path)
    assert spec.model.gguf_file == "m.Q4_K_M.gguf" and spec.model.load_in_4bit == (preset == "qlora-7b")
    assert not (tmp_path / "cache").exists()  # linting a spec never starts a conversion


def test_init_for_a_script_takes_an_alpaca_json_array(tmp_path, monkeypatch):
    """A valid JSON array of alpaca records (instruction/input/output) is a dataset the script reads: init
    writes a spec lint passes, and the plan counts its records."""
    import json

    from conftest import run_cli

    rows = [{"instruction": "Snu", "input": f"ord {i}", "output": f"{i} ord"} for i in range(37)]
    (tmp_path / "tiny_alpaca.json").write_text(json.dumps(rows, indent=1))
    monkeypatch.chdir(tmp_path)
    made = run_cli(
        "init", "--model", "my-model", "--data", "tiny_alpaca.json", "--preset", "command", "-o", "spec.yaml"
    )
    assert made.returncode == 0, made.stderr
    linted = run_cli("lint", "spec.yaml")
    assert linted.returncode == 0 and f"{len(rows)} samples" in linted.stdout, linted.stdout + linted.stderr


def test_init_sizes_the_run_from_the_data_and_finds_the_eval_file_beside_it(tmp_path, monkeypatch):
    """60 chats of one's own style with eval.jsonl beside them: the starter evaluates on that file, trains enough
    epochs for a hundred-odd optimizer steps, evaluates a few times per run, and is named after model and data."""
    import json

    import yaml

    chat = [{"role": "user", "content": "Status?"}, {"role": "assistant", "content": "Copy that. Over."}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"messages": chat}) + "\n" for _ in range(60)))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"messages": chat}) + "\n" for _ in range(8)))
    monkeypatch.chdir(tmp_path)
    made = run_cli("init", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--data", "train.jsonl", "-o", "spec.yaml")
    assert made.returncode == 0 and "0 warnings" in made.stdout, made.stdout + made.stderr
    raw = yaml.safe_load((tmp_path / "spec.yaml").read_text())
    assert raw["data"]["eval"] == "eval.jsonl" and raw["tracking"]["metric"] == "eval/loss"
    assert raw["tracking"]["experiment"] == "SmolLM2-135M-Instruct-train"
    report = lint_spec(load_spec(tmp_path / "spec.yaml"))
    steps = report.plan["total_steps"]
    assert steps >= 100 or raw["train"]["epochs"] == 20
    assert 1 < steps // raw["train"]["eval_every"] <= 4  # a few evaluations, all inside the run


def test_lint_warns_on_a_run_too_short_to_learn_and_an_eval_past_its_end(tmp_path):
    """The starter spec as it once was on 60 examples: 8 optimizer steps, eval every 200 (never)."""
    import yaml

    (tmp_path / "train.txt").write_text("".join(f"line {i}\n" for i in range(60)))
    (tmp_path / "eval.txt").write_text("held out\n")
    raw = yaml.safe_load((DEMO / "demo.yaml").read_text())
    raw["model"]["tokenizer"] = str(DEMO / "tokenizer.json")
    raw["data"] = {"train": "train.txt", "eval": "eval.txt"}
    raw["train"].update({"epochs": 1, "batch_size": 8, "grad_accum": 1, "eval_every": 200, "max_steps": None})
    for section in ("search", "pipeline", "configs"):
        raw.pop(section, None)
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(raw))
    report = lint_spec(load_spec(tmp_path / "old.yaml"))
    warned = {f.rule: f.message for f in report.findings if f.severity == "warning"}
    assert "8 optimizer steps" in warned["run-too-short"] and "past the run's end" in warned["eval-never"]
