"""The spec: a YAML file validated once, at the edge, into typed objects, and what it implies.

Pure by promise (tests/test_structure.py holds it): nothing here imports torch, transformers, peft,
mlflow or optuna. `schema` (the sections), `load` (file, named config, `--set`), `dotted` (dotted
names), `expressions` (the whitelist evaluator), `scope` (which names an expression may use),
`space` (the search space), `schedules`, `plan`, `rules`, `starter`.
"""

from .dotted import PATH_FIELDS, flatten, is_uri, parse_set_options, set_dotted
from .load import load_spec, validate
from .schema import (
    DataSpec,
    LoraSpec,
    ModelSpec,
    NamedConfig,
    ParamSpec,
    PipelineSpec,
    ProbeSpec,
    RuleSpec,
    SearchSpec,
    SoftRuleSpec,
    Spec,
    StageSpec,
    TinyModelSpec,
    TrackingSpec,
    TrainerSpec,
    TrainSpec,
)

__all__ = [
    "PATH_FIELDS",
    "DataSpec",
    "LoraSpec",
    "ModelSpec",
    "NamedConfig",
    "ParamSpec",
    "PipelineSpec",
    "ProbeSpec",
    "RuleSpec",
    "SearchSpec",
    "SoftRuleSpec",
    "Spec",
    "StageSpec",
    "TinyModelSpec",
    "TrackingSpec",
    "TrainSpec",
    "TrainerSpec",
    "flatten",
    "is_uri",
    "load_spec",
    "parse_set_options",
    "set_dotted",
    "validate",
]
