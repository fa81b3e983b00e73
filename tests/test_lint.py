"""lint: one spec that trips each rule and one that does not; the FastSpeech2 case; the gate on train."""

import json

import pytest
from mlflow import MlflowClient

from conftest import REPO, demo_raw, run_cli, write_spec
from tunelog.lint import lint_spec
from tunelog.spec import load_spec, validate


def lint_of(tmp_path, train=None, lora=None, rules=None, model=None, search=None):
    raw = demo_raw(**(train or {}))
    if search is not None:
        raw["search"] = search
    raw["train"].pop("eval_every", None)
    raw["lora"].update(lora or {})
    raw["model"]["tiny"].update(model or {})
    if rules is not None:
        raw["rules"] = rules
    return lint_spec(validate(raw, "spec.yaml", str(tmp_path)))


def ids(report, severity=None):
    return {f.rule for f in report.findings if severity is None or f.severity == severity} - {"plan"}


# (rule id, severity, overrides that trip it, overrides that keep it quiet)
CASES = [
    (
        "peak-lr-mismatch",
        "error",
        dict(train={"learning_rate": 1e-4, "lr_formula": "d ** -0.5", "lr_vars": {"d": 256}}),
        dict(train={"learning_rate": 1e-4}),
    ),
    ("lr-range", "error", dict(train={"learning_rate": 0.1}), dict(train={"learning_rate": 3e-4})),
    ("lr-range", "warning", dict(train={"learning_rate": 2e-2}), dict(train={"learning_rate": 5e-3})),
    (
        "warmup-length",
        "error",
        dict(train={"learning_rate": 1e-4, "warmup_steps": 30, "warmup_ratio": None}),
        dict(train={"learning_rate": 1e-4, "warmup_steps": 3, "warmup_ratio": None}),
    ),
    (
        "warmup-length",
        "warning",
        dict(train={"learning_rate": 1e-4, "max_steps": 10000, "warmup_steps": 10, "warmup_ratio": None}),
        dict(train={"learning_rate": 1e-4, "max_steps": 10000, "warmup_steps": 100, "warmup_ratio": None}),
    ),
    (
        "anneal-steps",
        "warning",
        dict(train={"learning_rate": 1e-4, "schedule": "step_anneal", "anneal_steps": [10, 40]}),
        dict(train={"learning_rate": 1e-4, "schedule": "step_anneal", "anneal_steps": [10, 20]}),
    ),
    (
        "end-lr-above-peak",
        "error",
        dict(train={"learning_rate": 1e-4, "end_lr": 2e-4}),
        dict(train={"learning_rate": 1e-4, "end_lr": 1e-5}),
    ),
    (
        "lora-shape",
        "warning",
        dict(train={"learning_rate": 1.5e-3}, lora={"r": 16, "alpha": 16}),
        dict(train={"learning_rate": 1.5e-3}, lora={"r": 16, "alpha": 32}),
    ),
    (
        "lora-shape",
        "error",
        dict(train={"learning_rate": 1e-4}, lora={"r": 256, "alpha": 512}),
        dict(train={"learning_rate": 1e-4}, lora={"r": 64, "alpha": 128}),
    ),
    (
        "optimizer-lr",
        "warning",
        dict(train={"learning_rate": 1.5e-3, "optimizer": "adamw8bit", "batch_size": 32}),
        dict(train={"learning_rate": 1.5e-3, "optimizer": "adamw", "batch_size": 32}),
    ),
    (
        "optimizer-lr",
        "warning",
        dict(train={"learning_rate": 1.5e-3, "batch_size": 8, "grad_accum": 1}),
        dict(train={"learning_rate": 1.5e-3, "batch_size": 8, "grad_accum": 4}),
    ),
    (
        "optimizer-lr",
        "warning",
        dict(train={"learning_rate": 1e-4, "precision": "fp16", "adam_eps": 1e-10}),
        dict(train={"learning_rate": 1e-4, "precision": "fp16", "adam_eps": 1e-8}),
    ),
    (
        "optimizer-lr",
        "warning",
        dict(train={"learning_rate": 1e-4, "weight_decay": 0.5}),
        dict(train={"learning_rate": 1e-4, "weight_decay": 0.01}),
    ),
]


@pytest.mark.parametrize("rule, severity, trips, quiet", CASES)
def test_each_rule_trips_and_stays_quiet(tmp_path, rule, severity, trips, quiet):
    assert rule in ids(lint_of(tmp_path, **trips), severity)
    assert rule not in ids(lint_of(tmp_path, **quiet))


def test_extreme_alpha_ratio(tmp_path):
    report = lint_of(tmp_path, train={"learning_rate": 1e-4}, lora={"r": 4, "alpha": 64})
    assert any("alpha/r = 16" in f.message for f in report.findings)


def test_plan_reports_effective_batch_and_steps(tmp_path):
    report = lint_of(tmp_path, train={"batch_size": 8, "grad_accum": 4, "max_steps": None, "epochs": 2})
    assert report.plan["effective_batch"] == 32
    assert report.plan["steps_per_epoch"] == 94  # ceil(ceil(3000 / 8) / 4)
    assert report.plan["total_steps"] == 188
    plan = next(f for f in report.findings if f.rule == "plan")
    assert "effective batch 32" in plan.message and "188 in all" in plan.message


def test_user_rules_in_the_spec_language(tmp_path):
    rules = [
        {
            "name": "8bit-high-lr",
            "reject": "learning_rate > 1.2e-4 and optimizer == 'adamw8bit'",
            "reason": "8-bit unstable at high LR",
        },
        {
            "name": "long-if-high-alpha",
            "if": "alpha_ratio >= 0.75",
            "require": ["total_steps >= 100", "lora.r >= 8"],
            "reason": "a high alpha ratio needs long training",
            "severity": "warning",
        },
        {"name": "sweep-only", "reject": "text_encoder_lr_ratio > 1", "reason": "needs a sweep param"},
    ]
    search = {"params": {"text_encoder_lr_ratio": {"type": "float", "min": 0.5, "max": 2.0}}}
    report = lint_of(
        tmp_path, train={"learning_rate": 2e-4, "optimizer": "adamw8bit", "max_steps": 25}, rules=rules, search=search
    )
    found = {f.rule: f for f in report.findings}
    assert found["8bit-high-lr"].severity == "error" and found["8bit-high-lr"].message == "8-bit unstable at high LR"
    assert found["long-if-high-alpha"].severity == "warning"
    assert found["sweep-only"].severity == "info" and "text_encoder_lr_ratio" in found["sweep-only"].message
    quiet = lint_of(
        tmp_path, train={"learning_rate": 1e-4, "optimizer": "adamw8bit", "max_steps": 200}, rules=rules, search=search
    )
    assert {"8bit-high-lr", "long-if-high-alpha"}.isdisjoint(ids(quiet))


def test_bad_rule_expression_is_a_spec_error(tmp_path):
    from tunelog.errors import SpecError

    with pytest.raises(SpecError, match=r"rules\.0: .*rule 'broken': syntax error"):
        lint_of(tmp_path, rules=[{"name": "broken", "reject": "learning_rate >"}])


def test_fastspeech2_port_gives_the_625x_error():
    report = lint_spec(load_spec(REPO / "examples/fastspeech2/fastspeech2_ported.yaml"))
    mismatch = next(f for f in report.findings if f.rule == "peak-lr-mismatch")
    assert mismatch.severity == "error" and "625x" in mismatch.message and "0.0625" in mismatch.message


def test_fastspeech2_fixed_has_no_error_and_schedule_prints_hand_values(tmp_path):
    path = REPO / "examples/fastspeech2/fastspeech2_fixed.yaml"
    assert not lint_spec(load_spec(path)).has_errors
    png = tmp_path / "lr.png"
    proc = run_cli("schedule", str(path), "--at", "1000,8000,100000,300000,500000", "-o", str(png))
    assert proc.returncode == 0, proc.stderr
    table = {
        int(a): float(b) for a, b in (line.split() for line in proc.stdout.splitlines() if line.strip()[:1].isdigit())
    }
    expected = {1000: 1e-4 * 1000 / 8000, 8000: 1e-4, 100_000: 1e-4, 300_000: 1e-4 * 0.5, 500_000: 1e-4 * 0.25}
    for step, lr in expected.items():
        assert table[step] == pytest.approx(lr, rel=1e-5), step
    assert png.stat().st_size > 10_000


def test_lint_cli_exit_codes_and_json(store):
    bad = run_cli("lint", str(REPO / "examples/fastspeech2/fastspeech2_ported.yaml"), "--format", "json")
    assert bad.returncode == 1
    data = json.loads(bad.stdout)
    assert data["counts"]["error"] == 2 and data["plan"]["total_steps"] == 900_000
    good = run_cli("lint", str(REPO / "examples/fastspeech2/fastspeech2_fixed.yaml"))
    assert good.returncode == 0 and "0 errors" in good.stdout


def test_train_refuses_lint_errors_unless_forced(tmp_path, store):
    path = write_spec(tmp_path / "bad.yaml", demo_raw(end_lr=1.0, learning_rate=1e-3, max_steps=5))
    refused = run_cli("train", str(path))
    assert refused.returncode == 2 and "end-lr-above-peak" in refused.stderr and "--force" in refused.stderr
    assert MlflowClient(store).get_experiment_by_name("test") is None  # nothing was started
    forced = run_cli("train", str(path), "--force")
    assert forced.returncode in (0, 3), forced.stderr


def test_train_records_lint_warnings_on_the_run(tmp_path, store):
    path = write_spec(tmp_path / "warn.yaml", demo_raw(learning_rate=2e-2, max_steps=5))
    proc = run_cli("train", str(path))
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("test").experiment_id])[0]
    assert "lr-range" in run.data.tags["tunelog.lint"]
    assert "Lint warnings: lr-range: peak LR 0.02 is outside" in run.data.tags["mlflow.note.content"]


def test_seed_style_8bit_trouble_gives_two_warnings(tmp_path):
    """lr 1.84e-4 with AdamW8bit and r = alpha = 128: the 8-bit optimizer's NaN risk and alpha == r both warn."""
    report = lint_of(
        tmp_path,
        train={"learning_rate": 1.84e-4, "optimizer": "adamw8bit", "warmup_ratio": 0.05},
        lora={"r": 128, "alpha": 128},
    )
    warnings = {f.rule: f for f in report.findings if f.severity == "warning"}
    assert set(warnings) == {"optimizer-lr", "lora-shape"}, report.to_text()
    assert "above train.max_lr_8bit 0.00012" in warnings["optimizer-lr"].message
    assert "go NaN" in warnings["optimizer-lr"].message
    assert "lora.alpha: 64" in warnings["lora-shape"].fix  # 0.5r: no rule of the spec forbids it


def test_alpha_fix_suggests_a_ratio_the_rules_allow(tmp_path):
    rules = [{"name": "alpha-at-least-r", "reject": "lora.alpha < lora.r", "reason": "this team trains alpha >= r"}]
    report = lint_of(tmp_path, train={"learning_rate": 5e-4}, lora={"r": 16, "alpha": 16}, rules=rules)
    shape = next(f for f in report.findings if f.rule == "lora-shape")
    assert shape.severity == "warning" and "lora.alpha: 32" in shape.fix  # 0.5 breaks the rule, 2 does not


SHOWS_ERRORS = {"fastspeech2_ported.yaml"}  # the README's example of what lint catches


@pytest.mark.parametrize(
    "example",
    sorted(
        p
        for p in (REPO / "examples").rglob("*.yaml")
        if p.name not in SHOWS_ERRORS
        and p.read_text().startswith(("model:", "#"))
        and "\nmodel:" in "\n" + p.read_text()
    ),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_every_bundled_example_and_its_named_configs_lint_clean(example):
    spec = load_spec(example)
    for config in [None, *spec.configs]:
        report = lint_spec(load_spec(example, config=config))
        assert not report.of("warning") and not report.has_errors, (config, report.to_text())
