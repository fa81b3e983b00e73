"""One run of the user's script: its process, its output read as it comes, its events, its end judged.

The script runs in its own process group, so a timeout, a divergence or a SIGTERM to tunelog stops it
and everything it started. Its stdout is read line by line on a thread (metrics parsed by `logs.parse`
where no `TunelogCallback` writes them, tqdm's `N/M` counter for the step of a line that names none);
a script with the callback speaks through the events file (`integrations.attach`), read between lines
and while the script is silent. Its end is judged by `logs.judge` from a bounded tail of its output.
"""

from __future__ import annotations

import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

from ..integrations import attach
from ..logs.console import Console, clean
from ..logs.judge import OOM_WORDS, Evidence, judge, nonfinite_line
from ..logs.parse import LogParser
from ..spec import Spec
from ..tracking import RunLogger
from ..training.memory import ProcessTreeMemory
from ..vocabulary import Outcome

# what a user's script decides for itself (its schedule, precision, seed, target modules): a script
# trainer's run gets these params after the script ends, where its TunelogCallback has not recorded what it used
SCRIPT_DECIDES = ("train.", "lora.", "model.")
TAIL_LINES = 200  # the end of a script's output kept for the judge, the failure's reason and an artifact
STOP_GRACE_S = 120.0  # after a stop file, how long the script may take to end its step before it is stopped
POLL_S = 0.5  # how often the events file is looked at while the script prints nothing
SHOW_EVERY_S = 10.0  # a progress line on the console at least this often while metrics come
SHOW_EVAL_EVERY_S = 2.0  # and at each eval, unless the script evaluates every step
# what a metric is called, for lines that are neither a dict nor name their step (an INFO line's
# `hidden_size: 576` or `line 1072` is no metric)
_METRIC_LIKE = re.compile(
    r"(?i)loss|acc|lr\b|learning_rate|grad|norm|eval|val|perplex|ppl|f1|score|reward|epoch|wer|cer|bleu|rouge|"
    r"runtime|per_second|it/s|throughput|tokens"
)
_SUMMARY_KEY = re.compile(r"(?:^|_)train_runtime$")  # Trainer's end-of-training summary: nothing pruned after it

LineHook = Callable[..., Optional[bool]]
"""Called with (step, metrics) for each metric line as the script prints it, `logged=True` for an eval the
script's TunelogCallback has written to the run already, and `training=False` once the Trainer's summary
has been printed; True stops the script (pruned)."""


@dataclass
class Ran:
    """How one execution of the user's command ended."""

    outcome: str  # ok, oom, diverged, failed, incomplete, pruned
    reason: str
    steps: int
    final: dict[str, float]
    seconds: float
    peak_gb: float = 0.0  # the process tree's peak: GPU memory where it used the GPU, else RSS (sampled)
    tail: list[str] = field(default_factory=list)  # the last TAIL_LINES lines of its output
    attached: bool = False  # its TunelogCallback recorded into the run (params included)


def configured_length(spec: Spec) -> dict[str, Any]:
    """The lengths the script was told to train for: its own args and `train.max_steps` when set."""
    args = {k: v for k, v in spec.flat_params().items() if k.startswith("trainer.args.")}
    return {**args, "train.max_steps": spec.train.max_steps} if spec.train.max_steps else args


def script_cwd(spec: Spec) -> Path:
    """Where the script runs: `trainer.cwd`, else the spec's folder (relative argv paths start there)."""
    return spec.path(spec.trainer.cwd) if spec.trainer.cwd else Path(spec.base_dir)


def script_env(spec: Spec, output_dir: Path, run: Optional[RunLogger]) -> dict[str, str]:
    """The script's environment. Under a run: the run, the stop file and the events file for its callback,
    the store under `TUNELOG_TRACKING_URI`, and `MLFLOW_TRACKING_URI` pointed at a scratch store in the
    output folder: tunelog records this run, so the script's own MLflow integration (HF's MLflowCallback,
    `report_to=["mlflow"]`) writes where nobody reads, instead of opening unparented runs in Default."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",  # lines as they happen: live metrics and step timing
        **spec.trainer.env,
        "TUNELOG_OUTPUT_DIR": str(output_dir),
    }
    if run is None:
        env[attach.ENV_CALLBACK] = "off"
    else:
        env.update(
            {
                attach.ENV_RUN_ID: run.run_id,
                attach.ENV_STOP_FILE: str(output_dir / attach.STOP_FILE),
                attach.ENV_EVENTS: str(output_dir / attach.EVENTS_FILE),
                attach.ENV_TRACKING_URI: run.client.tracking_uri,
                "MLFLOW_TRACKING_URI": f"sqlite:///{output_dir / '.script-mlflow.db'}",
            }
        )
    env.pop("MLFLOW_RUN_ID", None)  # the script's own MLflow calls must not join tunelog's parent run
    return env


def run_command(
    spec: Spec,
    argv: list[str],
    output_dir: Path,
    on_metrics: LineHook,
    memory_budget_gb: Optional[float] = None,
    run: Optional[RunLogger] = None,
) -> Ran:
    """Runs the script to its end (or a stop), following its output and events, sampling its memory.

    With `memory_budget_gb` (the probe's budget) a script whose process tree goes over it is stopped
    and its outcome is oom, as if the GPU had run out. With `run`, a script using `TunelogCallback`
    writes into that run: once it says so, its stdout is no longer parsed for metrics, its evals go to
    `on_metrics` unlogged, a stop is asked through the stop file (the Trainer ends its step and saves
    nothing), and its outcome is the callback's. Without `run` the callback stays off.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=script_cwd(spec),
        env=script_env(spec, output_dir, run),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )  # its own process group: stoppable as a whole
    watch = _Watch(proc, spec.trainer.timeout)
    sampler = ProcessTreeMemory(proc.pid, memory_budget_gb, on_over=lambda: stop_process(proc))
    session = _Session(spec, proc, output_dir, on_metrics, listening=run is not None)
    try:
        session.follow()
        code = proc.wait()
        session.take_events()  # the callback's last word, written just before the script ended
    except BaseException:  # Ctrl-C, SIGTERM (TrainingInterrupted) or a crash here: the child goes too
        stop_process(proc)
        raise
    finally:
        watch.cancel()
        sampler.stop()
        session.cancel_grace()
    if sampler.over:
        outcome, reason = Outcome.OOM, sampler.over
    elif watch.fired:
        outcome, reason = Outcome.FAILED, f"timeout after {spec.trainer.timeout:g}s"
    else:
        outcome, reason = session.verdict(code)
    seconds = time.monotonic() - start
    return Ran(outcome, reason, session.steps, session.final, seconds, sampler.peak_gb, session.tail, session.attached)


class _Session:
    """What one run of the script has said so far, on stdout and in its events."""

    def __init__(self, spec: Spec, proc: subprocess.Popen, output_dir: Path, hook: LineHook, listening: bool):
        self.spec, self.proc, self.hook = spec, proc, hook
        self.parser = LogParser(spec.trainer.patterns)
        self.console = Console()
        self.shown = time.monotonic()
        self.stop_file = output_dir / attach.STOP_FILE
        self.events = attach.Events(output_dir / attach.EVENTS_FILE) if listening else None
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.final: dict[str, float] = {}
        self.outcome, self.reason = Outcome.OK, ""
        self.oom_line = ""
        self.steps, self.named_step, self.epoch = 0, None, None
        self.training = True  # False once the Trainer's summary is printed
        self.attached, self.told = False, None  # the callback's presence and its outcome
        self.grace: Optional[threading.Timer] = None
        self.stopped = False

    # --- following ---------------------------------------------------------------------------------
    def follow(self) -> None:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=POLL_S)
            except queue.Empty:
                line = ""
            self.take_events()
            if line is None or self.stopped:
                return
            if line:
                self.on_line(line)

    def take_events(self) -> None:
        for kind, payload in self.events.new() if self.events else []:
            if kind == "attached":
                self.attached = True
            elif kind == "outcome":
                self.told = payload
            elif kind == "eval" and self.outcome == Outcome.OK:
                self.on_eval(*payload)  # type: ignore[misc]

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.named_step = self.steps = max(step, self.steps)
        self.final.update(metrics)
        if self.hook(step, metrics, logged=True, training=True):
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if not k.endswith(("runtime", "_per_second")))
            self.outcome, self.reason = Outcome.PRUNED, f"pruned at step {step} ({shown})"
            self.stop_file.write_text("pruned\n")  # the callback ends training at its next step
            self.grace = threading.Timer(STOP_GRACE_S, stop_process, args=(self.proc,))
            self.grace.daemon = True
            self.grace.start()

    def on_line(self, line: str) -> None:
        line = clean(line)
        self.tail.append(line)
        if not self.oom_line and OOM_WORDS.search(line):
            self.oom_line = line
        if self.attached or self.stopped:
            return  # the callback writes the metrics; the rest of stdout is the script's own
        if self.console.observe(line):
            return  # `[INFO|trainer.py:2668]`, a config dump: chatter, never metrics
        _, named, metrics = self.parser.parse_line(line)
        metrics = self._kept(line, named, metrics)
        if not metrics:
            if nonfinite_line(line):  # `loss is nan at batch 1200`: diverged, whatever numbers follow
                self._stop(Outcome.DIVERGED, f"log says {line.strip()[:200]}")
            return
        if any(_SUMMARY_KEY.search(k) for k in metrics):
            self.training = False
        step = self.console.step_of(named, metrics)
        if step is not None:
            self.named_step = max(step, self.named_step or step)
        self.epoch = metrics.get("epoch", self.epoch)
        # a script that says no step anywhere: its metric lines are all there is to count
        at = step if step is not None else self.steps + 1
        self.steps = max(self.steps, at)
        self.final.update(metrics)
        self._show(at, metrics)
        if self.hook(at, metrics, training=self.training):
            self._stop(Outcome.PRUNED, f"pruned at step {at}: {line.strip()[:200]}")
        elif any("loss" in k and not math.isfinite(v) for k, v in metrics.items()):
            self._stop(Outcome.DIVERGED, f"non-finite loss at step {at}: {line.strip()[:200]}")

    def _show(self, step: int, metrics: dict[str, float]) -> None:
        """A line on tunelog's console at each eval and every SHOW_EVERY_S: the script's own output is not
        shown, and a run of minutes must not be silent."""
        now = time.monotonic()
        evaluated = any(k.startswith(("eval", "val")) for k in metrics)
        if now - self.shown < (SHOW_EVAL_EVERY_S if evaluated else SHOW_EVERY_S):
            return
        self.shown = now
        of = f"/{self.console.total}" if self.console.total else ""
        shown = ", ".join(
            f"{k} {v:.4g}" for k, v in list(metrics.items())[:4] if not k.endswith(("runtime", "_second"))
        )
        print(f"  step {step}{of}: {shown}", file=sys.stderr, flush=True)

    def _kept(self, line: str, step: Optional[int], metrics: dict[str, float]) -> dict[str, float]:
        """A dict line (a Trainer's logs), a line that names its step, or the spec's own patterns keep every
        number; other lines only what reads as a metric (INFO's `hidden_size: 576` is none)."""
        if not metrics or self.spec.trainer.patterns or step is not None or "{'" in line or '{"' in line:
            return metrics
        return {k: v for k, v in metrics.items() if _METRIC_LIKE.search(k)}

    def _stop(self, outcome: Outcome, reason: str) -> None:
        self.outcome, self.reason, self.stopped = outcome, reason, True
        stop_process(self.proc)

    def cancel_grace(self) -> None:
        if self.grace is not None:
            self.grace.cancel()

    # --- the end -----------------------------------------------------------------------------------
    def verdict(self, code: int) -> tuple[str, str]:
        if self.attached and self.told and self.outcome == Outcome.OK and code == 0:
            outcome, reason = self.told
            # a stop file tunelog did not write: nothing was pruned
            return (Outcome.OK, reason) if outcome == Outcome.PRUNED else (Outcome(outcome), reason)
        if self.outcome != Outcome.OK:
            return self.outcome, self.reason
        if code == 0 and self.attached:
            return Outcome.OK, ""
        lines = list(self.tail)
        if self.oom_line and self.oom_line not in self.tail:
            lines.insert(0, self.oom_line)
        evidence = Evidence(
            lines=lines,
            exit_code=code,
            params=configured_length(self.spec) if not self.attached else {},
            max_step=self.named_step,
            last_epoch=self.epoch,
            where="the script's output",
        )
        return judge(evidence)


def _pump(stream: IO[str], lines: queue.Queue) -> None:
    """The script's stdout, line by line, into the queue; None at its end."""
    try:
        for line in stream:
            lines.put(line)
    finally:
        lines.put(None)


def stop_process(proc: subprocess.Popen) -> None:
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
        stop_process(proc)

    def cancel(self) -> None:
        if self._timer:
            self._timer.cancel()
