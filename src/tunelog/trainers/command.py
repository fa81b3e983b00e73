"""The command trainer: the user's own training script, driven as it is.

The argv is rendered from the spec (placeholders `{dotted.field}` and `{output_dir}`),
each item one argument, never through a shell; `trainers.script` runs it (its output and
events followed live, its end judged). Metrics it prints (and a JSONL file the spec names) are
logged to the run live; only the headline goes to a sweep's pruner, and only while it trains.
What it saved is logged (adapters, not a whole model), with the last lines it printed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from .. import tracking as t
from ..errors import SpecError
from ..integrations import attach
from ..integrations.hf_names import metric_name
from ..records import Reading, read_record, record_points
from ..records.base import ReadError
from ..spec import Spec
from ..spec.argv import PLACEHOLDER, shell_script_index
from ..tracking import RunLogger
from ..training.devices import visible_gpus
from ..vocabulary import Outcome, metric_key
from . import EvalHook, Result, outputs
from .script import SCRIPT_DECIDES, Ran, run_command, script_cwd

# a whole model's weights (transformers' save_model of a model without peft), never taken by a wildcard
_WHOLE_MODEL = re.compile(r"^(?:model|pytorch_model)(?:-\d+-of-\d+)?\.(?:safetensors|bin)$")
BIG_ARTIFACT = 100_000_000  # bytes: said on the console when a pattern asks for a file this large


RECORD_LOGS = ("trainer_log.jsonl", "trainer_state.json")  # read by records, with their own steps
OUTPUT_TAIL = "output_tail.log"  # the last lines the script printed, kept with every command-trainer run


def pruner_keys(spec: Spec) -> set[str]:
    """What the sweep's pruner judges: the spec's headline (`tracking.metric`) and what
    `trainer.eval_metrics` names, never any other `eval_*` number (accuracy, sample counts, runtime)."""
    return {metric_key(spec.tracking.metric), *(metric_key(k) for k in spec.trainer.eval_metrics)}


def as_argument(value: Any) -> str:
    """A value as a script reads it: an integral float as an integer (`{lora.alpha}` 16.0 -> `16`, which
    argparse's `type=int` takes), everything else as `str` gives it."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def render_argv(spec: Spec, output_dir: Path, argv: Optional[list[str]] = None) -> list[str]:
    """Placeholders filled from the spec's fields; a name the spec lacks is a spec error naming it.

    Each item stays one argument whatever its value holds (blanks, quotes, `;`): tunelog starts no
    shell, so a value cannot split into two arguments or run anything. Where the user's argv is
    itself a shell script (`[bash, -c, "python train.py --lr {train.learning_rate}"]`), the values
    in that script are shell-quoted, since that is the program that will read them."""
    values: dict[str, Any] = {**spec.flat_params(), "output_dir": str(output_dir), "python": sys.executable}
    items = list(spec.trainer.argv if argv is None else argv)
    problems = []

    def filler(quote: bool) -> Callable[[re.Match], str]:
        def fill(match: re.Match) -> str:
            name = match.group(1)
            if name not in values:
                problems.append(name)
                return match.group(0)
            text = as_argument(values[name])
            return shlex.quote(text) if quote else text

        return fill

    script = shell_script_index(items)
    rendered = [PLACEHOLDER.sub(filler(i == script), item) for i, item in enumerate(items)]
    if problems:
        raise SpecError(
            spec.source,
            [
                (
                    "trainer.argv",
                    f"unknown placeholder(s) {', '.join(sorted(set(problems)))}; "
                    f"use a spec field such as {{train.learning_rate}}, "
                    f"{{trainer.args.NAME}}, {{output_dir}} or {{python}}",
                )
            ],
        )
    return rendered


class CommandTrainer:
    """Registered as `command`."""

    def train(self, spec: Spec, run: RunLogger, on_eval: Optional[EvalHook] = None) -> Result:
        """Runs the script in a fresh output folder, logs what it wrote, then removes the folder.

        The folder holds whatever the script saved (weights included): left behind, a 40-trial
        sweep would leave 40 copies in the temp dir. It stays only with `trainer.keep_output`
        or when logging its artifacts failed, and then its path is printed.
        """
        output_dir = Path(tempfile.mkdtemp(prefix=f"tunelog-cmd-{run.run_id[:8]}-"))
        logged = False
        try:
            result = self._run(spec, run, output_dir, on_eval)
            logged = True
            return result
        finally:
            if spec.trainer.keep_output or not logged:
                print(f"command output kept in {output_dir}", file=sys.stderr)
            else:
                shutil.rmtree(output_dir, ignore_errors=True)

    def _run(self, spec: Spec, run: RunLogger, output_dir: Path, on_eval: Optional[EvalHook]) -> Result:
        argv = render_argv(spec, output_dir)
        # the GPUs the script is given (its device-hours in the changelog); 0 where it gets none
        gpus = len(visible_gpus({**os.environ, **spec.trainer.env}))
        run.log_batch(params={"trainer.rendered_argv": json.dumps(argv)}, tags={t.TAG_GPUS: str(gpus)})
        judged = pruner_keys(spec)
        headline = spec.tracking.metric
        console_keys: set[str] = set()

        def log(step: Optional[int], metrics: dict[str, float], logged: bool = False, training: bool = True) -> bool:
            """Logs the line's metrics (the headline under the spec's spelling: `eval_loss` is `eval/loss`);
            the headline (or what `trainer.eval_metrics` names) goes to `on_eval` (a sweep's pruner) while
            training lasts, and it may stop the script."""
            if not logged:
                named = {_as_headline(k, headline): v for k, v in metrics.items() if math.isfinite(v)}
                console_keys.update(named)
                run.log_metrics(named, step=step)
            if on_eval is None or not training:
                return False
            value = next((v for k, v in metrics.items() if metric_key(k) in judged and math.isfinite(v)), None)
            return value is not None and bool(on_eval(step or 0, value))

        ran: Optional[Ran] = None
        record = Reading()
        # a LLaMA-Factory YAML the command line names, with its overrides: read once, for params, identity, artifact
        config_file, config = outputs.config_on_command_line(argv, script_cwd(spec))
        try:
            ran = run_command(spec, argv, output_dir, log, run=run)
        finally:  # the spec's values where the script's callback did not record what the Trainer used
            record = _read_record(output_dir)
            decided = {k: v for k, v in spec.flat_params().items() if k.startswith(SCRIPT_DECIDES)}
            # the script's callback, when it attached, logged what it used first (unknown after a crash)
            run.log_new_params(
                outputs.what_ran(spec, config, record, decided),
                others_wrote=ran is None or ran.attached,
                later=ran is not None,
            )
        final = {_as_headline(k, headline): v for k, v in {**ran.final, **_metrics_file(spec, output_dir, run)}.items()}
        if record.series or record.final:
            final.update(_replace_with_record(run, record, console_keys, headline))
        identity = outputs.identity_of(config, record)
        if identity:
            run.later(tags={t.TAG_IDENTITY_KEYS: ",".join(sorted(identity))})
        run.log_text("".join(ran.tail), OUTPUT_TAIL)  # what the script said last, whatever its end
        if ran.outcome != Outcome.PRUNED:  # a pruned trial's saved files are no result to keep
            self._artifacts(spec, output_dir, run)
        for file in outputs.record_files(output_dir):
            run.log_artifact(file, outputs.RECORD_ARTIFACT)
        if config_file is not None:
            run.log_artifact(config_file, outputs.RECORD_ARTIFACT)
        totals = {"train/seconds": ran.seconds, "perf/peak_mem_gb": ran.peak_gb}
        run.log_metrics(totals)
        final.update(totals)
        outcome, reason = ran.outcome, ran.reason
        if record.outcome and outcome == Outcome.OK:  # the trainer's own record: it stopped short of its length
            outcome, reason = record.outcome
        elif record.outcome and outcome != Outcome.PRUNED:  # how far it got, beside why it ended
            reason = f"{reason} ({record.outcome[1]})"
        if outcome == Outcome.OK and headline not in final:
            shown = ", ".join(sorted(k for k in final if k not in totals)[:8]) or "nothing"
            print(f"tunelog: the script never logged {headline} (tracking.metric); it logged {shown}", file=sys.stderr)
        steps = record.max_step if record.max_step is not None else ran.steps
        return Result(outcome=outcome, reason=reason, steps=steps, metrics=final)

    @staticmethod
    def _artifacts(spec: Spec, output_dir: Path, run: RunLogger) -> None:
        """The output folder's files the patterns name, the final adapter's only (never an earlier checkpoint's),
        with its config and tokenizer; a wildcard never takes a whole model's weights."""
        skipped = []
        home = outputs.adapter_home(output_dir)
        taken: set[str] = set()
        for pattern in spec.trainer.artifacts:
            for path in sorted(output_dir.rglob(pattern)):
                if path.name in (attach.EVENTS_FILE, attach.STOP_FILE) or path.name in taken:
                    continue
                if outputs.in_other_checkpoint(path, output_dir, home):
                    continue
                if home is not None and path.name in outputs.ADAPTER_WEIGHTS and path.parent != home:
                    continue
                if _WHOLE_MODEL.match(path.name) and any(c in pattern for c in "*?["):
                    skipped.append(path.name)
                    continue
                size = path.stat().st_size
                if size > BIG_ARTIFACT:
                    print(
                        f"tunelog: logging {path.name} ({size / 1e6:.0f} MB) as trainer.artifacts asks", file=sys.stderr
                    )
                run.log_artifact(path, t.OUTPUTS_ARTIFACT)
                taken.add(path.name)
        for name in outputs.ADAPTER_COMPANIONS if home is not None and taken else ():
            if (home / name).is_file() and name not in taken:
                run.log_artifact(home / name, t.OUTPUTS_ARTIFACT)
        if skipped:
            print(
                f"tunelog: not logged (a whole model, not an adapter): {', '.join(sorted(set(skipped)))}; "
                "name it in trainer.artifacts to keep it",
                file=sys.stderr,
            )


def _as_headline(key: str, headline: str) -> str:
    """A metric under the spec's headline spelling where it is the headline by another (`eval_loss`)."""
    return headline if key != headline and metric_key(key) == metric_key(headline) else key


def _read_record(output_dir: Path) -> Reading:
    """The trainer's own record of the run in its output folder; an unreadable one is no record."""
    try:
        return read_record(output_dir)
    except (ReadError, OSError) as exc:
        print(f"tunelog: the trainer's record in its output folder was not read: {exc}", file=sys.stderr)
        return Reading()


def _replace_with_record(run: RunLogger, record: Reading, console_keys: set[str], headline: str) -> dict[str, float]:
    """The record's series and results replace what the console said of the same metrics (its keys, by
    Trainer's names: `loss` is `train/loss`); returns the record's final values."""
    points = [(_as_headline(k, headline), v, step) for k, v, step, _ in record_points(record) if math.isfinite(v)]
    covered = {k for k, _, _ in points}
    drop = {k for k in console_keys if k in covered or metric_name(k) in covered}
    if not run.replace_metrics(drop, points):
        print(
            "tunelog: this store cannot delete metrics: the console's values stay beside the trainer's record",
            file=sys.stderr,
        )
    last: dict[str, tuple[int, float]] = {}
    for k, v, step in points:
        if k not in last or step >= last[k][0]:
            last[k] = (step, v)
    return {k: v for k, (_, v) in last.items()}


def _metrics_file(spec: Spec, output_dir: Path, run: RunLogger) -> dict[str, float]:
    """Metrics the script wrote as JSONL (`{"step": 10, "loss": 0.5}` per line)."""
    if not spec.trainer.metrics_file:
        return {}
    path = output_dir / spec.trainer.metrics_file
    if path.name in RECORD_LOGS:  # the trainer's own record (LLaMA-Factory's trainer_log.jsonl): read as one
        return {}
    final: dict[str, float] = {}
    if path.is_file():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            step = int(record.pop("step", number))
            numbers = {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}
            run.log_metrics({k: v for k, v in numbers.items() if math.isfinite(v)}, step=step)
            final.update(numbers)
    return final


__all__ = ["CommandTrainer", "Ran", "render_argv", "run_command", "script_cwd"]
