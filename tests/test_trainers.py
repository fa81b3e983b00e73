"""The trainer registry: names a spec may use, refused duplicates, lazy imports."""

import pytest

from conftest import demo_raw
from tunelog.errors import SpecError, TunelogError
from tunelog.spec import validate
from tunelog.trainers import get_trainer, register_trainer, trainer_names


def test_builtins_are_registered_and_load_on_use():
    assert {"hf", "command"} <= set(trainer_names())
    assert type(get_trainer("command")).__name__ == "CommandTrainer"


@pytest.mark.parametrize("name", ["hf", "Bad Name", "", "9lives", "x" * 41])
def test_duplicate_and_bad_names_are_refused(name):
    with pytest.raises(TunelogError, match="already registered|refused"):
        register_trainer(name, "tunelog.trainers.hf:HFTrainer")


def test_unknown_trainer_type_is_a_spec_error_naming_the_known_ones(tmp_path):
    raw = demo_raw()
    raw["trainer"] = {"type": "deepspeed"}
    with pytest.raises(SpecError, match=r"trainer.type: unknown trainer 'deepspeed'; accepted: command, hf"):
        validate(raw, "spec.yaml", str(tmp_path))


def test_get_trainer_of_an_unknown_name_says_what_exists():
    with pytest.raises(TunelogError, match="no trainer named 'nope'; accepted: .*hf"):
        get_trainer("nope")
