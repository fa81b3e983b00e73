"""The spec is validated once at the edge; bad input names the file, the field and what is accepted."""

from pathlib import Path

import pytest

from conftest import REPO, demo_raw, run_cli, write_spec
from tunelog.errors import SpecError
from tunelog.spec import load_spec


def test_every_shipped_example_spec_validates():
    specs = sorted(p for p in (REPO / "examples").rglob("*.yaml") if "cluster" not in p.parts)  # k8s manifests
    assert specs, "no example specs found"
    for path in specs:
        spec = load_spec(path)
        for name in spec.configs:
            load_spec(path, config=name)


def test_demo_spec_resolves_paths_against_its_folder():
    spec = load_spec(REPO / "examples/demo/demo.yaml")
    assert spec.path(spec.data.train) == REPO / "examples/demo/data/general/train.txt"
    assert spec.train.schedule == "warmup_cosine"


def test_logged_paths_are_relative_to_the_project_root_and_relocated_on_the_same_machine(tmp_path, monkeypatch):
    """Files under the folder a run starts from are logged relative to it (a moved checkout finds them),
    files elsewhere absolute; started from another folder on the training machine, `reproduce` falls back
    to the absolute path the manifest recorded."""
    from tunelog.spec import validate
    from tunelog.training.provenance import manifest, relocated

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.txt").write_text("a b c\nd e f\n")
    raw = demo_raw()
    raw["data"]["train"] = "data/train.txt"
    spec = load_spec(write_spec(project / "run.yaml", raw))
    logged = spec.resolved(root=project)
    assert logged["data"]["train"] == "data/train.txt"
    assert logged["model"]["tokenizer"] == str((REPO / "examples/demo/tokenizer.json").resolve())
    recorded = manifest(spec)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    read_back = validate(logged, "spec of run X", str(Path.cwd()), check_files=False)
    assert relocated(read_back, recorded) == {"data.train": str(project / "data" / "train.txt")}
    monkeypatch.chdir(project)
    assert relocated(validate(logged, "spec of run X", str(Path.cwd()), check_files=False), recorded) == {}


def test_named_config_overrides_and_note(tmp_path):
    spec = load_spec(REPO / "examples/demo/demo.yaml", config="balanced")
    assert spec.lora.r == 16 and spec.lora.alpha == 32 and spec.train.learning_rate == 4e-3
    note = spec.note()
    assert "balanced" in note and "Purpose: More adapter capacity" in note and "Expected:" in note
    assert spec.flat_params()["lora.r"] == 16


def test_set_overrides_win_over_config():
    spec = load_spec(REPO / "examples/demo/demo.yaml", config="balanced", overrides={"lora.r": 4})
    assert spec.lora.r == 4 and spec.lora.alpha == 32


def test_flat_params_use_dotted_names():
    flat = load_spec(REPO / "examples/demo/demo.yaml").flat_params()
    assert flat["train.learning_rate"] == 5e-3
    assert flat["lora.alpha"] == 16
    assert flat["model.tiny.hidden_size"] == 128
    assert not any(k.startswith("tracking.") or k.startswith("configs") for k in flat)


def problems_for(tmp_path, mutate) -> list[tuple[str, str]]:
    raw = demo_raw()
    mutate(raw)
    path = write_spec(tmp_path / "bad.yaml", raw)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    return info.value.problems


def test_unknown_key_lists_accepted_keys(tmp_path):
    problems = problems_for(tmp_path, lambda r: r["train"].update(learning_rat=1e-4))
    assert problems[0][0] == "train.learning_rat"
    assert "unknown key" in problems[0][1] and "learning_rate" in problems[0][1]


def test_string_where_number_expected(tmp_path):
    problems = problems_for(tmp_path, lambda r: r["train"].update(batch_size="eight"))
    assert problems[0][0] == "train.batch_size" and "'eight'" in problems[0][1]


def test_negative_batch_size(tmp_path):
    problems = problems_for(tmp_path, lambda r: r["train"].update(batch_size=-4))
    assert problems == [("train.batch_size", "Input should be greater than 0 (got -4)")]


def test_missing_data_file(tmp_path):
    problems = problems_for(tmp_path, lambda r: r["data"].update(train="nowhere/train.txt"))
    assert problems[0][0] == "data.train" and "file not found" in problems[0][1]


def test_unknown_schedule_and_optimizer_say_what_is_accepted(tmp_path):
    def mutate(r):
        r["train"].update(schedule="exponential", optimizer="adam")

    problems = dict(problems_for(tmp_path, mutate))
    assert "'adamw', 'adamw8bit' or 'sgd'" in problems["train.optimizer"]
    assert "accepted: constant, cosine" in problems["train.schedule"]


def test_all_problems_collected_at_once(tmp_path):
    def mutate(r):
        r["train"].update(batch_size=0, grad_accum=-1)
        r["lora"].update(dropout=1.5)

    paths = {p for p, _ in problems_for(tmp_path, mutate)}
    assert paths == {"train.batch_size", "train.grad_accum", "lora.dropout"}


def test_bad_preset_is_reported_even_when_not_selected(tmp_path):
    problems = problems_for(
        tmp_path, lambda r: r.setdefault("configs", {}).update(broken={"overrides": {"train.batch_size": -1}})
    )
    assert problems[0][0].startswith("configs.broken.overrides: train.batch_size")


def test_unknown_config_name(tmp_path):
    path = write_spec(tmp_path / "ok.yaml", demo_raw())
    with pytest.raises(SpecError, match="no config named 'nope'; accepted: baseline, balanced, fast"):
        load_spec(path, config="nope")


def test_warmup_steps_and_ratio_are_exclusive(tmp_path):
    problems = problems_for(tmp_path, lambda r: r["train"].update(warmup_steps=10, warmup_ratio=0.1))
    assert "warmup_steps or warmup_ratio, not both" in problems[0][1]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r["train"].update(bogus=1), "train.bogus"),
        (lambda r: r["train"].update(learning_rate="fast"), "train.learning_rate"),
        (lambda r: r["train"].update(batch_size=-2), "train.batch_size"),
        (lambda r: r["data"].update(train="missing.txt"), "data.train"),
    ],
)
def test_cli_bad_spec_prints_one_line_and_exits_2(tmp_path, store, mutate, field):
    raw = demo_raw()
    mutate(raw)
    path = write_spec(tmp_path / "bad.yaml", raw)
    proc = run_cli("train", str(path))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{path}: {field}:")
    assert "Traceback" not in proc.stderr


def test_cli_missing_spec_file_exits_2(tmp_path, store):
    proc = run_cli("train", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "file not found" in proc.stderr and "Traceback" not in proc.stderr
