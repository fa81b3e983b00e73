"""`TunelogCallback`: a Hugging Face `Trainer` (or TRL `SFTTrainer`) script as a tunelog run.

    trainer = Trainer(model=peft_model, args=args, ..., callbacks=[TunelogCallback()])

Alone (`python my_script.py`), it opens one run of kind `train` in `MLFLOW_EXPERIMENT_NAME` (else the
store's Default experiment) and closes it however training ends. Under tunelog (the script as
`trainer: {type: command}` in a sweep, probe or stage), it writes into the run the command trainer
opened (`tunelog.integrations.attach`), reports each eval so the sweep's pruner can judge it, and stops training
cleanly when the pruner says so. Either way the run holds what a `tunelog train` run holds: params
under tunelog's names (`train.learning_rate`, `lora.r`...) with the rest under `hf.…`, the series
`train/loss`, `train/lr`, `eval/loss`, `eval/*`, `perf/samples_per_s`, the adapter, and an outcome
(`ok`, `diverged` when the loss or the gradient norm goes NaN/inf, which stops training, `incomplete`, `pruned`).

HF's own `MLflowCallback` (`report_to=["mlflow"]`) would open a second, unparented run: it is removed
from the trainer, and that is said once.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

from .. import tracking as t
from ..logs.judge import Evidence, judge
from ..vocabulary import Outcome
from . import attach
from .hf_names import metric_name

_ARGS = {  # TrainingArguments field -> tunelog's param name
    "learning_rate": "train.learning_rate",
    "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "lr_scheduler_type": "train.schedule",
    "warmup_steps": "train.warmup_steps",
    "warmup_ratio": "train.warmup_ratio",
    "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm",
    "seed": "train.seed",
    "gradient_checkpointing": "model.gradient_checkpointing",
}
_LORA = {
    "r": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "target_modules": "lora.target_modules",
}
# what names the run or where it writes, how often it logs and saves: recorded, never compared
_IDENTITY = {
    "output_dir",
    "logging_dir",
    "run_name",
    "seed",
    "data_seed",
    "hub_model_id",
    "push_to_hub",
    "report_to",
    "logging_steps",
    "logging_strategy",
    "save_steps",
    "save_strategy",
    "save_total_limit",
    "disable_tqdm",
    "dataloader_num_workers",
    "overwrite_output_dir",
}


def _announce() -> None:
    """Under tunelog, said once and as early as the script imports this (by the main process only): from
    then on the command trainer parses none of the script's stdout as metrics."""
    global _ANNOUNCED
    if not _ANNOUNCED and os.environ.get(attach.ENV_RUN_ID) and attach.main_process():
        attach.attached(os.environ[attach.ENV_RUN_ID])
        _ANNOUNCED = True


_ANNOUNCED = False
_announce()


class TunelogCallback(TrainerCallback):
    """Records the Trainer's run under tunelog's tracking contract (see the module's docstring)."""

    def __init__(self, experiment: Optional[str] = None, run_name: Optional[str] = None):
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        self.run_name = run_name
        self.run: Optional[t.RunLogger] = None
        self._own: Any = None  # the run context when this callback opened the run itself
        self._attached = os.environ.get(attach.ENV_RUN_ID)
        self._stop_file = os.environ.get(attach.ENV_STOP_FILE)
        self.outcome, self.reason = Outcome.OK, ""
        self._step_started = 0.0
        self._step_seconds: list[float] = []
        self._said_mlflow = False
        self._off = os.environ.get(attach.ENV_CALLBACK) == "off"  # a probe candidate: timed, not recorded
        self._last: dict[str, float] = {}  # each metric's last value: the headline for tunelog/score
        self._error: Optional[BaseException] = None  # what ended the script, when an exception did
        self._metric, self._direction = "eval/loss", t.MINIMIZE
        self._monitor: Any = None  # MLflow's system metrics, while a run of its own lasts

    # --- the trainer's events -------------------------------------------------------------------
    def on_init_end(self, args, state, control, **kwargs):
        self._drop_mlflow_callback()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._drop_mlflow_callback()
        if not state.is_world_process_zero:  # torchrun's other ranks: the main process records the run
            self._off = True
        if self.run is None and not self._off:
            self._open(args, state, model, kwargs.get("eval_dataloader"), kwargs.get("train_dataloader"))

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_started:
            self._step_seconds.append(time.perf_counter() - self._step_started)
        if self._stop_file and os.path.exists(self._stop_file):  # the sweep's pruner said stop
            self.outcome, self.reason = Outcome.PRUNED, f"pruned by the sweep at step {state.global_step}"
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is None or not logs:
            return
        summary = "train_runtime" in logs
        is_eval = any(str(k).startswith("eval_") for k in logs)  # its `epoch` repeats the training log's
        metrics = {
            metric_name(k, summary=summary): float(v)
            for k, v in logs.items()
            if isinstance(v, (int, float))
            and not isinstance(v, bool)
            and k not in ("step", "total_flos")
            and not ((is_eval or summary) and k == "epoch")
        }
        if self._step_seconds and not summary:
            samples = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
            metrics["perf/samples_per_s"] = samples * len(self._step_seconds) / sum(self._step_seconds)
            self._step_seconds.clear()
        self.run.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=state.global_step)
        self._last.update(metrics)
        # Trainer's logging_nan_inf_filter hides a NaN step loss from the logged mean; its grad norm shows it
        bad = next((k for k, v in metrics.items() if ("loss" in k or "grad_norm" in k) and not math.isfinite(v)), None)
        if bad and self.outcome == Outcome.OK:
            self.outcome, self.reason = Outcome.DIVERGED, f"{bad} is {metrics[bad]} at step {state.global_step}"
            control.should_training_stop = True
        evals = {k: v for k, v in metrics.items() if k.startswith("eval/")}
        if self._attached and evals:
            attach.evaluated(state.global_step, evals)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.run is None:
            return
        if self.outcome == Outcome.OK:  # a stop it did not ask for (an early-stopping callback, a crash caught)
            self.outcome, self.reason = judge(Evidence(trainer_steps=(state.global_step, state.max_steps)))
        if self.outcome in (Outcome.OK, Outcome.INCOMPLETE) and model is not None:
            self._save_adapter(model, processing_class, state.global_step)
        self.run.flush()
        if self._attached:  # the command trainer records the outcome and closes the run
            attach.ended(self.outcome, self.reason)
        else:
            headline = self._last.get(self._metric)
            if headline is not None and math.isfinite(headline):
                self.run.log_metrics({t.SCORE_METRIC: t.score(headline, self._direction)})
            self.run.set_outcome(self.outcome, self.reason)
            self._close(None)

    # --- the run ----------------------------------------------------------------------------------
    def _open(self, args, state, model, eval_dataloader, train_dataloader=None) -> None:
        tracker = t.Tracker(os.environ.get(attach.ENV_TRACKING_URI))
        params, identity = training_params(args, state, model)
        if self._attached:
            info = tracker.client.get_run(self._attached).info
            self.run = t.RunLogger(tracker.client, self._attached, info.experiment_id, info.artifact_uri)
            self.run.log_new_params(params, later=True)  # one write with the tag
            self.run.set_tags({t.TAG_IDENTITY_KEYS: ",".join(sorted(identity))})
            _announce()
            return
        metric = (
            f"eval/{args.metric_for_best_model.removeprefix('eval_')}" if args.metric_for_best_model else "eval/loss"
        )
        maximize = bool(args.greater_is_better) if args.metric_for_best_model else False
        self._metric, self._direction = metric, t.MAXIMIZE if maximize else t.MINIMIZE
        named = args.run_name if args.run_name and args.run_name != args.output_dir else None  # `--run_name`
        tags = {
            t.TAG_KIND: t.KIND_TRAIN,
            t.TAG_NAME: self.run_name or named or Path(args.output_dir or "train").name,
            t.TAG_METRIC: metric,
            t.TAG_DIRECTION: t.MAXIMIZE if maximize else t.MINIMIZE,
            t.TAG_IDENTITY_KEYS: ",".join(sorted(identity)),
            t.TAG_EVAL_KEY: _eval_key(eval_dataloader),
            t.TAG_TRAINER: "hf-callback",
        }
        self._own = tracker.run(self.experiment, run_name=tags[t.TAG_NAME], tags=tags)
        self.run = self._own.__enter__()
        self._catch_the_scripts_exception()
        atexit.register(lambda: self._close(self._error or RuntimeError("the script ended before training did")))
        self.run.log_params(params)
        self.run.log_datasets(_datasets(getattr(train_dataloader, "dataset", None), eval_dataloader))
        self._monitor = self.run.system_metrics(True)
        self._monitor.__enter__()

    def _catch_the_scripts_exception(self) -> None:
        """An exception that ends the script is what the run says it failed of (`ValueError: bad lr`), not
        that the script ended early: kept from `sys.excepthook`, which runs before `atexit`."""
        previous = sys.excepthook

        def hook(kind, error, traceback):
            self._error = error
            previous(kind, error, traceback)

        sys.excepthook = hook

    def _close(self, error: Optional[BaseException]) -> None:
        """Ends the run this callback opened: FINISHED, or FAILED when the script ends without `on_train_end`."""
        own, self._own = self._own, None
        if own is None:
            return
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.__exit__(None, None, None)
        if error is None:
            own.__exit__(None, None, None)
        else:
            own.__exit__(type(error), error, None)

    def _save_adapter(self, model, tokenizer, step: int) -> None:
        """The adapter as the run's MLflow model where its base has a name, else the `adapter/` folder."""
        if hasattr(model, "peft_config"):
            base = getattr(model.peft_config.get("default"), "base_model_name_or_path", None)
            self.run.log_adapter(model, tokenizer, base, step)

    def _drop_mlflow_callback(self) -> None:
        """Takes HF's MLflowCallback out of the trainer's callback list (found as the caller's `self`:
        transformers' CallbackHandler dispatches every event from `call_event`)."""
        handler = next(
            (
                f.f_locals["self"]
                for f in _frames(3)
                if hasattr(f.f_locals.get("self"), "callbacks") and hasattr(f.f_locals["self"], "remove_callback")
            ),
            None,
        )
        if handler is None:
            return
        kept = [c for c in handler.callbacks if type(c).__name__ != "MLflowCallback"]
        if len(kept) < len(handler.callbacks):
            handler.callbacks = kept  # a new list: the event being dispatched keeps its own
            if not self._said_mlflow:
                print("tunelog: removed the Trainer's MLflowCallback (tunelog records this run)", file=sys.stderr)
                self._said_mlflow = True


def training_params(args, state, model) -> tuple[dict[str, Any], set[str]]:
    """(params, identity keys): tunelog's names where they map, every other TrainingArguments field as `hf.…`."""
    raw = args.to_dict()
    params: dict[str, Any] = {}
    for field, name in _ARGS.items():
        if raw.get(field) is not None:
            params[name] = raw[field]
    params["train.max_steps"] = state.max_steps or raw.get("max_steps")
    params["train.precision"] = "bf16" if raw.get("bf16") else "fp16" if raw.get("fp16") else "fp32"
    peft = getattr(model, "peft_config", {}).get("default") if model is not None else None
    if peft is not None:
        for field, name in _LORA.items():
            value = getattr(peft, field, None)
            if value is not None:
                params[name] = ",".join(sorted(map(str, value))) if isinstance(value, (list, set, tuple)) else value
        if getattr(peft, "base_model_name_or_path", None):
            params["model.name"] = peft.base_model_name_or_path
    elif model is not None and getattr(getattr(model, "config", None), "_name_or_path", None):
        params["model.name"] = model.config._name_or_path
    params.update({f"hf.{k}": v for k, v in raw.items() if k not in _ARGS and v is not None})
    identity = {f"hf.{k}" for k in _IDENTITY if f"hf.{k}" in params} | {"train.seed"}
    return {k: str(v) for k, v in params.items() if v is not None}, identity


def _datasets(train, eval_loader) -> list[tuple[str, str, Optional[str]]]:
    """The Trainer's datasets as the run's dataset inputs: (context, name, fingerprint) where they have one."""
    out = []
    for context, data in (("train", train), ("eval", getattr(eval_loader, "dataset", None))):
        if data is not None:
            out.append((context, f"{context}_dataset", _fingerprint(data)))
    return out


def _eval_key(loader) -> Optional[str]:
    """A `datasets.Dataset`'s fingerprint names the eval set's content; other datasets have no key."""
    return _fingerprint(getattr(loader, "dataset", None))


def _fingerprint(data) -> Optional[str]:
    fingerprint = getattr(data, "_fingerprint", None)
    return str(fingerprint)[:12] if fingerprint else None


def _frames(depth: int):
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return
        yield frame
        frame = frame.f_back
