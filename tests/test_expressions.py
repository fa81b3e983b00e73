"""The whitelist evaluator: what it computes, and what it refuses."""

import math

import pytest

from tunelog.spec.expressions import ExpressionError, parse


@pytest.mark.parametrize(
    "text, env, expected",
    [
        ("lora.r * alpha_ratio", {"lora.r": 64, "alpha_ratio": 0.5}, 32.0),
        (
            "learning_rate > 1.2e-4 and optimizer == 'adamw8bit'",
            {"learning_rate": 2e-4, "optimizer": "adamw8bit"},
            True,
        ),
        (
            "learning_rate > 1.2e-4 and optimizer == 'adamw8bit'",
            {"learning_rate": 1e-4, "optimizer": "adamw8bit"},
            False,
        ),
        ("d_model ** -0.5", {"d_model": 256}, 0.0625),
        ("not (epochs >= 16) or warmup in [100, 200]", {"epochs": 12, "warmup": 5}, True),
        ("optimizer not in ('sgd', 'prodigy')", {"optimizer": "adamw"}, True),
        ("1 < x <= 3", {"x": 3}, True),
        ("sqrt(x) + log(e) + max(1, 2, y)", {"x": 16, "y": 7}, 12.0),
        ("a if a > b else b", {"a": 2, "b": 5}, 5),
        ("flag == true", {"flag": True}, True),
    ],
)
def test_evaluates(text, env, expected):
    assert (
        parse(text).evaluate(env) == pytest.approx(expected)
        if isinstance(expected, float)
        else parse(text).evaluate(env) == expected
    )


def test_collects_dotted_names():
    assert parse("train.learning_rate * 2 > lora.r and pi > 3").names == {"train.learning_rate", "lora.r"}


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "x.__class__",
        "open('/etc/passwd')",
        "[i for i in range(3)]",
        "x[0]",
        "lambda: 1",
        "(y := 3)",
        "f'{x}'",
        "x @ y",
    ],
)
def test_refuses_anything_outside_the_whitelist(text):
    with pytest.raises(ExpressionError):
        parse(text).evaluate({"x": [1], "y": 2})


def test_dunder_names_are_just_unknown_names():
    with pytest.raises(ExpressionError, match="unknown name"):
        parse("__builtins__").evaluate({})


def test_syntax_error_names_the_text():
    with pytest.raises(ExpressionError, match=r"syntax error in 'lr >'"):
        parse("lr >")


def test_unknown_name_lists_known_ones():
    with pytest.raises(ExpressionError, match="unknown name.*lr.*known: learning_rate"):
        parse("lr > 1").evaluate({"learning_rate": 1.0})


def test_type_error_is_an_expression_error():
    with pytest.raises(ExpressionError, match="cannot evaluate"):
        parse("optimizer > 3").evaluate({"optimizer": "adamw"})


def test_math_domain_error_is_an_expression_error():
    with pytest.raises(ExpressionError):
        parse("log(x)").evaluate({"x": -1})
    assert math.isclose(parse("exp(0)").evaluate({}), 1.0)
