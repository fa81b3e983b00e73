"""The spec's typed sections: what a spec file may say, each field's accepted values, checked once.

Every later part (trainer, tracker, lint, sweep) reads a `Spec` and never the raw YAML. Validation
problems are reported as `(field.path, message)` pairs by `validation_problems`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import SpecError
from .argv import quoted_placeholder, shell_script_index
from .dotted import PATH_FIELDS, apply_overrides, flatten, is_uri
from .problems import validation_problems
from .schedules import schedule_names


class _Section(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TinyModelSpec(_Section):
    """A Llama-style model built from a config: the demo's model, nothing downloaded."""

    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(128, gt=0)
    max_position: int = Field(256, gt=0)
    init_seed: int = 0


class ModelSpec(_Section):
    name: Optional[str] = None  # a hub id, a folder, or package:NAME[/SUB] (a folder of an installed package)
    gguf_file: Optional[str] = None  # a GGUF file in model.name's folder, converted once to safetensors (cached)
    tiny: Optional[TinyModelSpec] = None
    tokenizer: Optional[str] = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    gradient_checkpointing: bool = False
    adapter: Optional[str] = None  # start from this LoRA adapter: a folder, or runs:/RUN_ID/adapter
    adapter_init: Literal["continue", "merge"] = "continue"  # train it further, or merge it and add a fresh one

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.name is None) == (self.tiny is None):
            raise ValueError("set exactly one of model.name (a Hugging Face id or local path) or model.tiny")
        if self.tiny is not None and self.tokenizer is None:
            raise ValueError("model.tiny needs model.tokenizer (a tokenizer.json file or folder)")
        if self.gguf_file is not None and self.name is None:
            raise ValueError("model.gguf_file needs model.name: the folder (or hub id) that holds the file")
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit are exclusive; accepted: at most one true")
        return self


class DataSpec(_Section):
    train: str
    eval: Optional[str] = None
    format: Literal["auto", "text", "jsonl", "datasets"] = "auto"
    text_field: str = "text"
    max_length: int = Field(128, gt=0)
    extra_eval: dict[str, str] = Field(default_factory=dict)  # more held-out sets, logged as eval/NAME/loss
    sample_prompts: list[str] = Field(default_factory=list)  # answered before and after training: samples.md


class LoraSpec(_Section):
    r: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["auto", "all-linear"] = "auto"
    bias: Literal["none", "all", "lora_only"] = "none"


class TrainSpec(_Section):
    learning_rate: float = Field(2e-4, gt=0)
    lr_formula: Optional[str] = None  # the schedule's peak as ported code computes it, e.g. "d_model ** -0.5"
    lr_vars: dict[str, float] = Field(default_factory=dict)  # names lr_formula may use
    schedule: str = "cosine"
    warmup_steps: Optional[int] = Field(None, ge=0)
    warmup_ratio: Optional[float] = Field(None, ge=0, lt=1)
    end_lr: float = Field(0.0, ge=0)
    anneal_steps: list[int] = Field(default_factory=list)
    anneal_rate: float = Field(0.5, gt=0, le=1)
    num_cycles: int = Field(1, gt=0)
    power: float = Field(1.0, gt=0)
    div_factor: float = Field(25.0, ge=1)
    epochs: Optional[float] = Field(1.0, gt=0)
    max_steps: Optional[int] = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_grad_norm: Optional[float] = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adamw", "adamw8bit", "sgd"] = "adamw"
    adam_eps: float = Field(1e-8, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    ema_decay: Optional[float] = Field(None, gt=0, lt=1)
    eval_every: Optional[int] = Field(None, gt=0)
    divergence_factor: float = Field(4.0, gt=1)
    max_lr_8bit: float = Field(1.2e-4, gt=0)  # lint warns above it for 8-bit optimizers (their states go NaN)
    seed: int = 0

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, name: str) -> str:
        if name not in schedule_names():
            raise ValueError(f"unknown schedule {name!r}; accepted: {', '.join(schedule_names())}")
        return name

    @model_validator(mode="after")
    def _schedule_fields(self) -> "TrainSpec":
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("set warmup_steps or warmup_ratio, not both")
        if self.schedule in ("warmup_cosine", "noam") and not (self.warmup_steps or self.warmup_ratio):
            raise ValueError(f"schedule {self.schedule} needs warmup_steps or warmup_ratio > 0")
        if self.anneal_steps != sorted(self.anneal_steps) or any(s <= 0 for s in self.anneal_steps):
            raise ValueError(f"anneal_steps must be positive and increasing (got {self.anneal_steps})")
        return self


class RuleSpec(_Section):
    """A safety rule shared by `lint` and sweep constraints, in the expression language.

    Either `reject: EXPR` (the rule is broken when EXPR is true) or `if: EXPR` with
    `require: [EXPR, ...]` (broken when the condition holds and any requirement fails).
    """

    name: str
    reject: Optional[str] = None
    if_: Optional[str] = Field(None, alias="if")
    require: list[str] = Field(default_factory=list)
    reason: str = ""
    severity: Literal["error", "warning", "info"] = "error"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_form(self) -> "RuleSpec":
        if (self.reject is None) == (not self.require):
            raise ValueError(
                f"rule {self.name!r}: give either `reject: EXPR` or `require: [EXPR, ...]` (with optional `if:`)"
            )
        from .expressions import ExpressionError, parse

        for text in [self.reject, self.if_, *self.require]:
            if text is not None:
                try:
                    parse(text)
                except ExpressionError as exc:
                    raise ValueError(f"rule {self.name!r}: {exc}") from None
        return self


class ParamSpec(_Section):
    """One searched parameter: float/int with min/max (log, step) or categorical with choices."""

    type: Literal["float", "int", "categorical"]
    min: Optional[float] = None
    max: Optional[float] = None
    log: bool = False
    step: Optional[float] = Field(None, gt=0)
    choices: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _bounds(self) -> "ParamSpec":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            return self
        if self.min is None or self.max is None:
            raise ValueError(f"a {self.type} parameter needs `min` and `max`")
        if self.min > self.max:
            raise ValueError(f"`min <= max` must hold, but got (min={self.min}, max={self.max})")
        if self.log and self.min <= 0:
            raise ValueError(f"a log-scaled parameter needs min > 0 (got min={self.min})")
        if self.log and self.step is not None:
            raise ValueError("`log` and `step` cannot be combined")
        return self


class SoftRuleSpec(_Section):
    """A combination accepted only with a given probability (seeded, reproducible)."""

    name: str
    when: str
    probability: float = Field(ge=0, le=1)
    reason: str = ""


class ObjectiveSpec(_Section):
    metric: str
    direction: Literal["minimize", "maximize"] = "minimize"


class PrunerSpec(_Section):
    type: Literal["median", "hyperband", "none"] = "median"
    startup_trials: int = Field(2, ge=0)
    # no trial is judged before this share of its steps (below 1) or step count (1 and up), nor before it
    # has reported min_reports values: a loss at step 1 says how a run started, not where it goes
    warmup: float = Field(0.25, ge=0)
    min_reports: int = Field(1, ge=1)


class QuickSpec(_Section):
    """What `--quick` means: fewer trials and spec overrides that make each one cheaper."""

    n_trials: int = Field(4, gt=0)
    overrides: dict[str, Any] = Field(default_factory=dict)


class SearchSpec(_Section):
    study: Optional[str] = None
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    n_trials: int = Field(20, gt=0)
    timeout: Optional[float] = Field(None, gt=0)
    second_objective: Optional[ObjectiveSpec] = None
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    derived: dict[str, str] = Field(default_factory=dict)
    constraints: list[RuleSpec] = Field(default_factory=list)
    soft: list[SoftRuleSpec] = Field(default_factory=list)
    max_consecutive_rejections: int = Field(50, gt=0)
    quick: QuickSpec = Field(default_factory=QuickSpec)

    @model_validator(mode="after")
    def _names(self) -> "SearchSpec":
        if not self.params:
            raise ValueError("search.params is empty: name at least one parameter to search")
        clash = sorted(set(self.params) & set(self.derived))
        if clash:
            raise ValueError(f"derived params may not override sampled ones: {', '.join(clash)}")
        from .expressions import ExpressionError, parse

        for name, text in self.derived.items():
            try:
                parse(text)
            except ExpressionError as exc:
                raise ValueError(f"derived {name!r}: {exc}") from None
        for soft in self.soft:
            try:
                parse(soft.when)
            except ExpressionError as exc:
                raise ValueError(f"soft rule {soft.name!r}: {exc}") from None
        return self


class StageSpec(_Section):
    """One stage of a staged fine-tune: its own data and length, any overrides, and how it starts."""

    name: str
    train: str
    eval: Optional[str] = None
    epochs: Optional[float] = Field(None, gt=0)
    max_steps: Optional[int] = Field(None, gt=0)
    overrides: dict[str, Any] = Field(default_factory=dict)
    init: Literal["continue", "merge"] = "continue"


class PipelineSpec(_Section):
    name: Optional[str] = None
    eval_previous: bool = True  # also evaluate each stage on the earlier stages' held-out sets
    stages: list[StageSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> "PipelineSpec":
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique (got {names})")
        if not self.stages:
            raise ValueError("pipeline.stages is empty: list at least one stage")
        return self


class ProbeSpec(_Section):
    """What `probe` tries: knobs by dotted path in the sweep's parameter syntax, and its limits."""

    params: dict[str, ParamSpec] = Field(default_factory=dict)
    length_field: Optional[str] = None  # JSONL field that measures a sample's cost (audio seconds, say)
    headroom: float = Field(0.1, ge=0, lt=1)  # share of the memory budget kept free
    warmup_steps: int = Field(2, ge=0)
    max_steps: int = Field(12, gt=1)
    stable_within: float = Field(0.02, gt=0)  # stop measuring once throughput moves less than this
    min_seconds: float = Field(1.0, ge=0)  # measure each candidate at least this long (short steps are noisy)
    memory_knobs: list[str] = Field(default_factory=list)  # more knobs memory grows with (a script's own multiplier)
    # a command trainer's probe: argv added to each probe run (the train.max_steps override is always set),
    # and metrics it prints with its throughput (samples/s) and peak memory (GB), else timed and sampled
    extra_argv: list[str] = Field(default_factory=list)
    throughput_metric: Optional[str] = None
    memory_metric: Optional[str] = None
    # the real training's optimizer steps, for the pick's ETA (a command trainer's own length), e.g.
    # "trainer.args.epochs * n_samples / train.batch_size"; the built-in trainer's plan needs none
    total_steps: Optional[str] = None
    # hold batch x accumulation at this many samples per optimizer step (accum = N / batch; batches that do
    # not divide N are skipped), so the pick trains the same optimisation as the user's config
    keep_effective_batch: Optional[int] = Field(None, gt=0)


class TrainerSpec(_Section):
    """Which trainer runs the config: the built-in `hf`, or the user's own script (`command`).

    `argv` items may hold placeholders for any spec field (`{trainer.args.network_dim}`,
    `{train.learning_rate}`) and `{output_dir}`; `args` holds the script's own knobs so
    sweeps and probes can target them (`trainer.args.network_dim`).
    """

    type: str = "hf"  # a registered trainer: hf (built in), command (your script), or one you register
    argv: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Optional[str] = None
    args: dict[str, Any] = Field(default_factory=dict)
    metrics_file: Optional[str] = None  # JSONL the script writes, relative to {output_dir}
    patterns: list[str] = Field(default_factory=list)  # extra metric regexes (named groups key, value, step)
    # what is kept of the script's output folder: adapters (kohya's LoRAs, peft's adapter_model) and logs; a
    # pattern with a wildcard never takes a whole model (model.safetensors: 0.5 GB a trial for a 135M model),
    # a pattern naming one does, with a size warning
    artifacts: list[str] = Field(default_factory=lambda: ["*.safetensors", "adapter_config.json", "*.log"])
    timeout: Optional[float] = Field(None, gt=0)
    keep_output: bool = False  # keep the script's output folder after its artifacts are logged
    # metrics the script prints that a sweep's pruner may judge (besides eval/..., val_..., validation_...)
    eval_metrics: list[str] = Field(default_factory=list)

    @field_validator("type")
    @classmethod
    def _known_type(cls, name: str) -> str:
        from ..trainers.registry import trainer_names

        if name not in trainer_names():
            raise ValueError(f"unknown trainer {name!r}; accepted: {', '.join(trainer_names())}")
        return name

    @model_validator(mode="after")
    def _argv(self) -> "TrainerSpec":
        if self.type == "command" and not self.argv:
            raise ValueError(
                "trainer.argv is empty: give the command to run, e.g. [python, train.py, --lr, '{train.learning_rate}']"
            )
        script = shell_script_index(self.argv)
        if script >= 0 and (inside := quoted_placeholder(self.argv[script])):
            raise ValueError(
                f"trainer.argv: {inside} is inside quotes in the shell script; write it bare (tunelog quotes "
                f"each value for the shell, and a value in your quotes would end them: `--set` could run code)"
            )
        return self


class TrackingSpec(_Section):
    experiment: str = "tunelog"
    run_name: Optional[str] = None
    tags: dict[str, str] = Field(default_factory=dict)
    note: Optional[str] = None
    metric: str = "eval/loss"
    direction: Literal["minimize", "maximize"] = "minimize"
    system_metrics: bool = (
        True  # MLflow's CPU/memory/GPU figures on training runs (`--set tracking.system_metrics=false`)
    )


class NamedConfig(_Section):
    """A preset: overrides by dotted path plus the text that becomes the run's note."""

    overrides: dict[str, Any] = Field(default_factory=dict)
    purpose: Optional[str] = None
    strategy: Optional[str] = None
    expected: Optional[str] = None

    def note(self, name: str) -> str:
        parts = [f"**{name}**"]
        for label in ("purpose", "strategy", "expected"):
            text = getattr(self, label)
            if text:
                parts.append(f"{label.capitalize()}: {text.strip()}")
        return "\n\n".join(parts)


class Spec(_Section):
    model: ModelSpec
    data: DataSpec
    lora: LoraSpec = Field(default_factory=LoraSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    rules: list[RuleSpec] = Field(default_factory=list)
    search: Optional[SearchSpec] = None
    pipeline: Optional[PipelineSpec] = None
    probe: Optional[ProbeSpec] = None
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    configs: dict[str, NamedConfig] = Field(default_factory=dict)

    # Set by load_spec, not by the YAML: where relative paths are resolved from,
    # and which named config (if any) was applied.
    source: str = Field("<memory>", exclude=True)
    base_dir: str = Field(".", exclude=True)
    config_name: Optional[str] = Field(None, exclude=True)

    def path(self, relative: str) -> Path:
        """A path from the spec, resolved against the spec file's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def resolved(self, root: Optional[Path] = None) -> dict[str, Any]:
        """The spec as data (named configs dropped: the applied one is already merged).

        With a root (the project folder a run started from), file fields are written the way the
        logged copy is read back: relative to that root when the file lies under it, so a checkout
        moved or cloned elsewhere finds them from its own root; absolute otherwise.
        """
        data = self.model_dump(mode="json", exclude={"configs"}, by_alias=True, exclude_none=False)
        if root is None:
            return data
        for section, field in PATH_FIELDS:
            value = data[section].get(field)
            if value and not is_uri(value):
                data[section][field] = self.portable_path(value, root)
        data["data"]["extra_eval"] = {k: self.portable_path(v, root) for k, v in data["data"]["extra_eval"].items()}
        if data.get("pipeline"):
            for stage in data["pipeline"]["stages"]:
                for field in ("train", "eval"):
                    if stage.get(field):
                        stage[field] = self.portable_path(stage[field], root)
        if data["trainer"]["argv"]:  # a command trainer's script runs in its folder (the spec's, by default)
            data["trainer"]["cwd"] = self.portable_path(data["trainer"]["cwd"] or ".", root)
        return data

    def portable_path(self, value: str, root: Path) -> str:
        """`value` relative to `root` (POSIX separators) when the file lies under it, else absolute."""
        path = self.path(value).resolve()
        try:
            return path.relative_to(root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def flat_params(self) -> dict[str, Any]:
        """The config flattened with dots (`train.learning_rate`), the names MLflow compares across runs."""
        data = self.resolved()
        for section in ("tracking", "rules", "search", "pipeline", "probe"):
            data.pop(section, None)
        return flatten(data)

    def with_overrides(self, overrides: dict[str, Any], where: str = "overrides") -> "Spec":
        """A copy with dotted-path overrides applied and validated again (sweep trials, stages)."""
        raw = apply_overrides(self.model_dump(mode="json", by_alias=True), overrides)
        try:
            spec = Spec.model_validate(raw)
        except ValidationError as err:
            raise SpecError(self.source, validation_problems(err, Spec, f"{where}: ")) from None
        return spec.model_copy(
            update={"source": self.source, "base_dir": self.base_dir, "config_name": self.config_name}
        )

    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.flat_params(), sort_keys=True).encode()).hexdigest()[:12]

    def note(self) -> Optional[str]:
        parts = []
        if self.config_name:
            parts.append(self.configs[self.config_name].note(self.config_name))
        if self.tracking.note:
            parts.append(self.tracking.note.strip())
        return "\n\n".join(parts) or None
