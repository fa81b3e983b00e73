"""The command trainer: the user's own training script, driven as it is.

The argv is rendered from the spec (placeholders `{dotted.field}` and `{output_dir}`),
each item one argument, never through a shell. Output is read line by line as it comes,
metrics parsed by `logparse` (and read from a JSONL file when the spec names one) and
logged to the run live. The script runs in its own process group, so a timeout, a
divergence or a SIGTERM to tunelog stops it and everything it started.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .. import tracking as t
from ..errors import SpecError
from ..integrations import attach
from ..logs.judge import OOM_WORDS, Evidence, judge, nonfinite_line
from ..logs.parse import LogParser
from ..spec import Spec
from ..tracking import RunLogger
from ..training.devices import visible_gpus
from ..training.memory import ProcessTreeMemory
from ..vocabulary import Outcome
from . import EvalHook, Result

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.]*)\}")
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh"}
TAIL_LINES = 200  # the end of a script's output kept for the judge (and the failure's reason)


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
            return shlex.quote(str(values[name])) if quote else str(values[name])

        return fill

    script = shell_script_index(items)
    rendered = [_PLACEHOLDER.sub(filler(i == script), item) for i, item in enumerate(items)]
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


def shell_script_index(argv: list[str]) -> int:
    """Where a shell's script sits in an argv (`bash -c S`, `bash -ec S`, `sh -e -o pipefail -c S`,
    `/usr/bin/env [VAR=x] bash -c S`), or -1 when the argv starts no shell script: placeholders there are
    shell-quoted, since a shell reads that item as code."""
    i = 0
    if i < len(argv) and Path(argv[i]).name == "env":
        i += 1
        while i < len(argv) and ("=" in argv[i] or argv[i].startswith("-")):
            i += 1
    if i >= len(argv) or Path(argv[i]).name not in _SHELLS:
        return -1
    i, has_c = i + 1, False
    while i < len(argv) and argv[i][:1] in ("-", "+") and argv[i] != "--":
        if argv[i] in ("-o", "+o", "-O", "+O"):
            i += 1  # takes the option's name
        elif argv[i][:1] == "-" and not argv[i].startswith("--") and "c" in argv[i][1:]:
            has_c = True
        i += 1
    return i if has_c and i < len(argv) else -1


def script_cwd(spec: Spec) -> Path:
    """Where the script runs: `trainer.cwd`, else the spec's folder (relative argv paths start there)."""
    return spec.path(spec.trainer.cwd) if spec.trainer.cwd else Path(spec.base_dir)


@dataclass
class Ran:
    """How one execution of the user's command ended."""

    outcome: str  # ok, oom, diverged, failed
    reason: str
    steps: int
    final: dict[str, float]
    seconds: float
    peak_gb: float = 0.0  # the process tree's peak: GPU memory where it used the GPU, else RSS (sampled)


LineHook = Callable[..., Optional[bool]]
"""Called with (step, metrics) for each metric line as the script prints it, and `logged=True` for an eval
the script's TunelogCallback has written to the run already; True stops the script (pruned)."""
STOP_GRACE_S = 120.0  # after a stop file, how long the script may take to end its step before it is stopped
_EVAL_NAME = re.compile(r"^(eval|val|valid|validation)[/_.]", re.I)


def configured_length(spec: Spec) -> dict[str, Any]:
    """The lengths the script was told to train for: its own args and `train.max_steps` when set."""
    args = {k: v for k, v in spec.flat_params().items() if k.startswith("trainer.args.")}
    return {**args, "train.max_steps": spec.train.max_steps} if spec.train.max_steps else args


def run_command(
    spec: Spec,
    argv: list[str],
    output_dir: Path,
    on_metrics: LineHook,
    memory_budget_gb: Optional[float] = None,
    run: Optional[RunLogger] = None,
) -> Ran:
    """Runs the script to its end (or a stop), parsing its output live and sampling its memory.

    With `memory_budget_gb` (the probe's budget) a script whose process tree goes over it is stopped
    and its outcome is oom, as if the GPU had run out. With `run`, a script using `TunelogCallback`
    writes into that run (`tunelog.integrations.attach`): once it says so, its stdout is no longer parsed for metrics,
    its evals go to `on_metrics` unlogged, a stop is asked through the stop file (the Trainer ends its
    step and saves nothing), and its outcome is the callback's. Without `run` the callback stays off.
    """
    parser = LogParser(spec.trainer.patterns)
    stop_file = output_dir / attach.STOP_FILE
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",  # lines as they happen: live metrics and step timing
        **spec.trainer.env,
        "TUNELOG_OUTPUT_DIR": str(output_dir),
        **(
            {
                attach.ENV_RUN_ID: run.run_id,
                attach.ENV_STOP_FILE: str(stop_file),
                "MLFLOW_TRACKING_URI": run.client.tracking_uri,
            }
            if run is not None
            else {attach.ENV_CALLBACK: "off"}
        ),
    }
    env.pop("MLFLOW_RUN_ID", None)  # the script's own MLflow calls must not join tunelog's parent run
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=script_cwd(spec),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )  # its own process group: stoppable as a whole
    watch = _Watch(proc, spec.trainer.timeout)
    sampler = ProcessTreeMemory(proc.pid, memory_budget_gb, on_over=lambda: _stop(proc))
    final: dict[str, float] = {}
    outcome, reason, oom_line, steps, named_step, epoch = Outcome.OK, "", "", 0, None, None
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    attached, told, grace = False, None, None  # the callback's presence, its outcome, the stop's deadline
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            tail.append(line)
            if not oom_line and OOM_WORDS.search(line):
                oom_line = line
            said = attach.parse(line) if run is not None else None
            if said is not None:
                kind, payload = said
                if kind == "attached":
                    attached = True
                elif kind == "outcome":
                    told = payload
                elif kind == "eval" and outcome == Outcome.OK:
                    step, metrics = payload
                    named_step = steps = max(step, steps)
                    final.update(metrics)
                    if on_metrics(step, metrics, logged=True):
                        shown = ", ".join(
                            f"{k} {v:.4g}" for k, v in metrics.items() if not k.endswith(("runtime", "_per_second"))
                        )
                        outcome, reason = Outcome.PRUNED, f"pruned at step {step} ({shown})"
                        stop_file.write_text("pruned\n")  # the callback ends training at its next step
                        grace = threading.Timer(STOP_GRACE_S, _stop, args=(proc,))
                        grace.daemon = True
                        grace.start()
                continue
            if attached:
                continue  # the callback writes the metrics; the rest of stdout is the script's own
            _, step, metrics = parser.parse_line(line)
            if not metrics:
                if nonfinite_line(line):  # `loss is nan at batch 1200`: diverged, whatever numbers follow
                    outcome, reason = Outcome.DIVERGED, f"log says {line.strip()[:200]}"
                    _stop(proc)
                    break
                continue
            if step is not None:
                named_step = max(step, named_step or step)
            epoch = metrics.get("epoch", epoch)
            steps = max(steps, step or steps + 1)
            stop = on_metrics(step or steps, metrics)
            final.update(metrics)
            if stop:
                outcome, reason = Outcome.PRUNED, f"pruned at step {step or steps}: {line.strip()[:200]}"
                _stop(proc)
                break
            if any("loss" in k and not math.isfinite(v) for k, v in metrics.items()):
                outcome, reason = Outcome.DIVERGED, f"non-finite loss at step {step or steps}: {line.strip()[:200]}"
                _stop(proc)
                break
        code = proc.wait()
    except BaseException:  # Ctrl-C, SIGTERM (TrainingInterrupted) or a crash here: the child goes too
        _stop(proc)
        raise
    finally:
        watch.cancel()
        sampler.stop()
        if grace is not None:
            grace.cancel()
    if attached and told and outcome == Outcome.OK and code == 0:
        outcome, reason = told  # diverged, incomplete or ok, as the callback saw training end
        if outcome == Outcome.PRUNED:
            outcome = Outcome.OK  # a stop file tunelog did not write: nothing was pruned
    if sampler.over:
        outcome, reason = Outcome.OOM, sampler.over
    elif watch.fired:
        outcome, reason = Outcome.FAILED, f"timeout after {spec.trainer.timeout:g}s"
    elif outcome == Outcome.OK and (code != 0 or not attached):
        lines = list(tail) if not oom_line or oom_line in tail else [oom_line, *tail]
        evidence = Evidence(
            lines=lines,
            exit_code=code,
            params=configured_length(spec) if not attached else {},
            max_step=named_step,
            last_epoch=epoch,
            where="the script's output",
        )
        outcome, reason = judge(evidence)
    return Ran(outcome, reason, steps, final, time.monotonic() - start, sampler.peak_gb)


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
        run.log_params({"trainer.rendered_argv": json.dumps(argv)})
        # the GPUs the script is given (its device-hours in the changelog); 0 where it gets none
        run.set_tags({t.TAG_GPUS: str(len(visible_gpus({**os.environ, **spec.trainer.env})))})

        evals = set(spec.trainer.eval_metrics)

        def log(step: Optional[int], metrics: dict[str, float], logged: bool = False) -> bool:
            """Logs the line's metrics; an eval-style one goes to `on_eval` (a sweep's pruner), which may stop."""
            if not logged:
                run.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=step)
            if on_eval is None:
                return False
            value = next(
                (v for k, v in metrics.items() if (k in evals or _EVAL_NAME.match(k)) and math.isfinite(v)), None
            )
            return value is not None and bool(on_eval(step or 0, value))

        run.flush()  # the params and tags the script's callback reads are in the store before it starts
        ran = run_command(spec, argv, output_dir, log, run=run)
        final = {**ran.final, **_metrics_file(spec, output_dir, run)}
        self._artifacts(spec, output_dir, run)
        totals = {"train/seconds": ran.seconds, "perf/peak_mem_gb": ran.peak_gb}
        run.log_metrics(totals)
        final.update(totals)
        return Result(outcome=ran.outcome, reason=ran.reason, steps=ran.steps, metrics=final)

    @staticmethod
    def _artifacts(spec: Spec, output_dir: Path, run: RunLogger) -> None:
        for pattern in spec.trainer.artifacts:
            for path in sorted(output_dir.rglob(pattern)):
                run.log_artifact(path, "outputs")


def _metrics_file(spec: Spec, output_dir: Path, run: RunLogger) -> dict[str, float]:
    """Metrics the script wrote as JSONL (`{"step": 10, "loss": 0.5}` per line)."""
    if not spec.trainer.metrics_file:
        return {}
    path = output_dir / spec.trainer.metrics_file
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


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's whole process group, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


class _Watch:
    """Stops the child when its timeout passes."""

    def __init__(self, proc: subprocess.Popen, timeout: Optional[float]):
        self.fired = False
        self._timer = threading.Timer(timeout, self._fire, args=(proc,)) if timeout else None
        if self._timer:
            self._timer.daemon = True
            self._timer.start()

    def _fire(self, proc: subprocess.Popen) -> None:
        self.fired = True
        _stop(proc)

    def cancel(self) -> None:
        if self._timer:
            self._timer.cancel()


__all__ = ["CommandTrainer", "Ran", "render_argv", "run_command", "script_cwd"]
