"""A named config trains exactly its values, in every bundled example: the sweep's own path from the queued
trial to the trial's spec (sampling, derived params, the config's overrides) gives the spec that
`tunelog train SPEC --config NAME` trains, and what the trial records for a sweep helper derives it back."""

from pathlib import Path

import pytest

from conftest import REPO
from tunelog.spec import load_spec, space
from tunelog.sweep import Sweep, SweepOptions
from tunelog.sweep.study import ATTR_CONFIG, enqueue_named_configs, suggest
from tunelog.tracking import Tracker

EXAMPLES = sorted(
    p for p in (REPO / "examples").glob("*/*.yaml") if "configs:" in p.read_text() and "search:" in p.read_text()
)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.parent.name)
def test_each_named_config_of_a_sweep_trains_its_values(example: Path, store, tmp_path):
    spec = load_spec(example)
    assert spec.configs, f"{example} has no named configs"
    runner = Sweep(spec, Tracker(), SweepOptions(storage=str(tmp_path / "optuna.journal"), echo=lambda _: None))
    study = runner.study()
    enqueue_named_configs(study, spec, runner.search, len(spec.configs), lambda _: None)
    for _ in spec.configs:
        trial = study.ask()
        name = trial.user_attrs[ATTR_CONFIG]
        values = runner.trial_values(trial, suggest(trial, runner.search))
        trained = runner.trial_spec(trial, values).flat_params()
        written = load_spec(example, config=name).flat_params()
        assert {k: trained[k] for k in written} == written, f"{example.name} config {name}"
        # the helpers it records (alpha_ratio) derive the values it trained, not a sample it ignored
        derived = space.derive(runner.search, trial.params, spec.source, written)
        for field, value in derived.items():
            assert value == pytest.approx(written[field]), f"{example.name} config {name}: {field}"
