"""The search space in the spec's terms: validation, derived params, rules, soft rules, narrowing."""

import pytest

from conftest import demo_raw
from tunelog.errors import SpecError
from tunelog.spec import ParamSpec, validate
from tunelog.spec.rules import config_key, judge
from tunelog.spec.space import check_targets, derive, narrow


def with_search(tmp_path, search):
    raw = demo_raw()
    raw["search"] = search
    return validate(raw, "spec.yaml", str(tmp_path))


BASE = {
    "params": {
        "train.learning_rate": {"type": "float", "min": 1e-5, "max": 1e-3, "log": True},
        "lora.r": {"type": "categorical", "choices": [4, 8]},
        "alpha_ratio": {"type": "float", "min": 0.25, "max": 0.9},
    },
    "derived": {"lora.alpha": "lora.r * alpha_ratio * 4"},
}


@pytest.mark.parametrize(
    "param, message",
    [
        ({"type": "float", "min": 2, "max": 1}, "`min <= max` must hold, but got (min=2.0, max=1.0)"),
        ({"type": "float", "min": 0, "max": 1, "log": True}, "log-scaled parameter needs min > 0"),
        ({"type": "categorical", "choices": []}, "non-empty `choices`"),
        ({"type": "int", "min": 1}, "needs `min` and `max`"),
    ],
)
def test_bad_params_name_the_field(tmp_path, param, message):
    with pytest.raises(SpecError) as info:
        with_search(tmp_path, {"params": {"train.learning_rate": param}})
    path, msg = info.value.problems[0]
    assert path == "search.params.train.learning_rate" and message in msg


def test_derived_may_not_override_sampled(tmp_path):
    with pytest.raises(SpecError, match="derived params may not override sampled ones: lora.r"):
        with_search(tmp_path, {**BASE, "derived": {"lora.r": "8"}})


def test_dotted_names_must_be_spec_fields(tmp_path):
    spec = with_search(tmp_path, {**BASE, "derived": {"lora.alpah": "lora.r * 2"}})
    with pytest.raises(SpecError) as info:
        check_targets(spec)
    assert info.value.problems[0][0] == "search.derived.lora.alpah"


def test_derived_params_are_computed_in_order(tmp_path):
    spec = with_search(
        tmp_path, {**BASE, "derived": {"lora.alpha": "lora.r * alpha_ratio * 4", "te_lr": "train.learning_rate * 0.5"}}
    )
    out = derive(spec.search, {"lora.r": 8, "alpha_ratio": 0.5, "train.learning_rate": 1e-4}, "spec.yaml")
    assert out == {"lora.alpha": 16.0, "te_lr": 5e-5}


def test_derived_with_unknown_name_is_a_spec_error_at_load(tmp_path):
    with pytest.raises(
        SpecError,
        match=r"search.derived.lora.alpha: unknown name\(s\) rank in 'rank \* 2'; names in "
        r"scope: .*alpha_ratio",
    ):
        with_search(tmp_path, {**BASE, "derived": {"lora.alpha": "rank * 2"}})


def test_derived_params_run_in_dependency_order(tmp_path):
    spec = with_search(tmp_path, {**BASE, "derived": {"te_lr": "lora.alpha * 1e-5", "lora.alpha": "lora.r * 2"}})
    assert derive(spec.search, {"lora.r": 8}, "spec.yaml") == {"lora.alpha": 16, "te_lr": 16e-5}


def test_hard_rules_and_conditional_rules(tmp_path):
    spec = with_search(
        tmp_path,
        {
            **BASE,
            "constraints": [
                {
                    "name": "8bit-high-lr",
                    "reject": "learning_rate > 1.2e-4 and optimizer == 'adamw8bit'",
                    "reason": "8-bit unstable at high LR",
                },
                {
                    "name": "high-alpha-long",
                    "if": "alpha_ratio >= 0.75",
                    "require": ["epochs >= 16", "r >= 8"],
                    "reason": "high alpha needs long training",
                },
            ],
        },
    )
    env = {"learning_rate": 2e-4, "optimizer": "adamw8bit", "alpha_ratio": 0.5, "epochs": 12, "r": 8}
    verdict = judge(spec, env, 0, "k")
    assert verdict.rule == "8bit-high-lr" and verdict.reason == "8-bit unstable at high LR"
    assert verdict.broken == {"8bit-high-lr": 1.0, "high-alpha-long": 0.0}
    verdict = judge(spec, {**env, "optimizer": "adamw", "alpha_ratio": 0.8}, 0, "k")
    assert verdict.rule == "high-alpha-long"
    assert not judge(spec, {**env, "optimizer": "adamw", "alpha_ratio": 0.8, "epochs": 16}, 0, "k").rejected


def test_spec_error_rules_join_the_sweep_constraints(tmp_path):
    raw = demo_raw()
    raw["search"] = BASE
    raw["rules"] = [{"name": "tiny-batch", "reject": "batch_size < 4", "reason": "too small"}]
    spec = validate(raw, "spec.yaml", str(tmp_path))
    assert judge(spec, {"batch_size": 2}, 0, "k").rule == "tiny-batch"


def test_soft_rules_are_seeded_and_reproducible(tmp_path):
    spec = with_search(
        tmp_path,
        {
            **BASE,
            "soft": [{"name": "rarely-big", "when": "lora.r == 8", "probability": 0.3, "reason": "big rank rarely"}],
        },
    )
    keys = [config_key({"lora.r": 8, "x": i}) for i in range(400)]
    fates = [judge(spec, {"lora.r": 8}, 7, k).rejected for k in keys]
    assert fates == [judge(spec, {"lora.r": 8}, 7, k).rejected for k in keys]  # same seed, same fate
    accepted = fates.count(False) / len(fates)
    assert 0.22 < accepted < 0.38
    assert fates != [judge(spec, {"lora.r": 8}, 8, k).rejected for k in keys]  # another seed, other draws
    assert not any(judge(spec, {"lora.r": 4}, 7, k).rejected for k in keys)  # rule does not apply
    assert "soft rule: accepted with p=0.3" in judge(spec, {"lora.r": 8}, 7, keys[fates.index(True)]).reason


def test_narrow_shrinks_ranges_and_categoricals():
    params = {
        "lr": ParamSpec(type="float", min=1e-5, max=1e-2, log=True),
        "r": ParamSpec(type="categorical", choices=[4, 8, 16, 32]),
        "n": ParamSpec(type="int", min=1, max=100),
        "w": ParamSpec(type="float", min=0.0, max=1.0),
    }
    top = [{"lr": 1e-4, "r": 8, "n": 40, "w": 0.5}, {"lr": 4e-4, "r": 16, "n": 50, "w": 0.6}]
    out, said = narrow(params, top, margin=0.2)
    assert out["r"].choices == [8, 16]
    assert 1e-5 < out["lr"].min < 1e-4 and 4e-4 < out["lr"].max < 1e-2
    assert (out["n"].min, out["n"].max) == (38, 52)
    assert out["w"].min == pytest.approx(0.48) and out["w"].max == pytest.approx(0.62)
    assert any(line.startswith("r: [4, 8, 16, 32] -> [8, 16]") for line in said)
