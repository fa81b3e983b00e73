"""Verbs that train or measure: train, sweep, analyze, stages, probe."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import click

from ..errors import TrainingFailed, TunelogError
from ..tracking.uri import browsable_with_mlflow_ui
from ..util.redact import redact_url
from ..vocabulary import Outcome
from .app import cli, force_option, leave_behind, lint_gate, load, spec_options


@cli.command()
@spec_options
@force_option
def train(spec_file: str, config: Optional[str], overrides: tuple[str, ...], force: bool) -> None:
    """Fine-tune with LoRA from SPEC and record one MLflow run (lint runs first).

    Example: tunelog train examples/demo/demo.yaml --config balanced
    """
    spec = load(spec_file, config, overrides)  # validate before importing torch: bad input fails fast
    report = lint_gate(spec, force)
    from ..tracking import Tracker
    from ..train import run_training

    tracker = Tracker()
    run_id, result = run_training(spec, tracker, lint=report)
    metric = spec.tracking.metric
    value = result.metrics.get(metric)
    shown = f"{metric}={value:.4f}" if value is not None else f"{metric}=n/a"
    click.echo(
        f"run {run_id}: outcome {result.outcome}{' (' + result.reason + ')' if result.reason else ''}, "
        f"{result.steps} steps, {shown}; store {redact_url(tracker.uri)}"
    )
    if spec.data.sample_prompts and result.outcome == Outcome.OK:
        click.echo(f"answers before and after training: the run's samples.md ({_artifact_path(tracker, run_id)})")
    if result.outcome != Outcome.OK:
        sys.exit(3)


def _artifact_path(tracker, run_id: str) -> str:
    """Where a local store keeps the run's samples.md (a file to open); the run's artifact URI elsewhere."""
    uri = tracker.client.get_run(run_id).info.artifact_uri
    return uri.removeprefix("file://") + "/samples.md"


@cli.command()
@spec_options
@force_option
@click.option(
    "--n-trials", type=click.IntRange(min=1), default=None, help="Trials in the study (default: search.n_trials)."
)
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after this many seconds."
)
@click.option("--quick", is_flag=True, help="search.quick: fewer, cheaper trials.")
@click.option(
    "--storage",
    default=None,
    help="Optuna storage: a journal file path or a database URL (default: optuna.journal beside the MLflow store).",
)
@click.option("--study", default=None, help="Study name (default: search.study or EXPERIMENT-sweep).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Local worker processes (default: one per --gpus-per-trial visible GPUs, one on the CPU).",
)
@click.option(
    "--gpus-per-trial", type=click.IntRange(min=1), default=1, show_default=True, help="GPUs each worker gets."
)
@click.option("--force-resume", is_flag=True, help="Go on with a study started with another search space.")
@click.option(
    "--retry-failed", is_flag=True, help="Run failed trials' params again (they stop counting against n_trials)."
)
@click.option("--refine-from", default=None, metavar="STUDY", help="Narrow the space around STUDY's best trials.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Trials --refine-from keeps.")
@click.option("--promote", "promote_to", default=None, metavar="MODEL", help="Register the best trial as MODEL.")
@click.option("--changelog", "changelog_to", default=None, metavar="FILE", help="Write the experiment's changelog.")
@click.option("--worker", is_flag=True, hidden=True)
def sweep(
    spec_file: str,
    config: Optional[str],
    overrides: tuple[str, ...],
    force: bool,
    n_trials,
    timeout,
    quick: bool,
    storage,
    study,
    workers: Optional[int],
    gpus_per_trial: int,
    force_resume: bool,
    retry_failed: bool,
    refine_from,
    top_k: int,
    promote_to: Optional[str],
    changelog_to: Optional[str],
    worker: bool,
) -> None:
    """Run an Optuna study over SPEC's `search:` space; every trial is a child MLflow run.

    Rerunning the same command resumes the study; --workers N runs N local processes,
    and invocations on several machines sharing --storage and MLFLOW_TRACKING_URI form one study.

    Example: tunelog sweep examples/demo/demo.yaml --n-trials 8
    """
    spec = load(spec_file, config, overrides)
    if not worker:
        lint_gate(spec, force)
    from ..sweep import Sweep, SweepOptions
    from ..sweep.workers import default_workers
    from ..tracking import Tracker

    opts = SweepOptions(
        overrides=tuple(overrides),
        n_trials=n_trials,
        timeout=timeout,
        quick=quick,
        storage=storage,
        study=study,
        workers=workers or default_workers(dict(os.environ), gpus_per_trial),
        gpus_per_trial=gpus_per_trial,
        force_resume=force_resume,
        retry_failed=retry_failed,
        refine_from=refine_from,
        top_k=top_k,
        echo=click.echo,
    )
    runner = Sweep(spec, Tracker(), opts)
    if worker:
        runner.work()
        return
    summary = runner.run()
    c = summary.counts
    if summary.deferred:  # other invocations still train: the last of them analyses, promotes, writes
        click.echo(f"study {summary.study}: this invocation is done; sweep run {summary.sweep_run_id} stays open")
        return
    click.echo(
        f"study {summary.study}: {c['complete']} complete, {c['pruned']} pruned, {c['rejected']} rejected, "
        f"{c['failed']} failed; sweep run {summary.sweep_run_id}"
    )
    if summary.best_trial is not None:
        click.echo(
            f"best: trial {summary.best_trial} {spec.tracking.metric}={summary.best_value:.4f} "
            f"{_readable(summary.best_params)} (run {summary.best_run_id})"
        )
    if not c["complete"] and runner.failures:
        say_first_failure(runner.tracker, runner.failures[0])
        raise TrainingFailed(f"no trial of study {summary.study} completed; the first failed: {runner.failures[0][1]}")
    leave_behind(runner.tracker, spec.tracking.experiment, summary.best_run_id, promote_to, changelog_to)
    where_it_went(runner.tracker, spec.tracking.experiment, f"sweep run {summary.sweep_run_id}")


def _readable(params: dict) -> str:
    """`lr=0.001414 r=16`: four significant digits, as a person compares values (the run has them all)."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def say_first_failure(tracker, failure: tuple[int, str, Optional[str]]) -> None:
    """The first failed trial's reason and the last lines its script printed (its run's output tail)."""
    number, reason, run_id = failure
    click.echo(f"trial {number} failed: {reason}", err=True)
    if not run_id:
        return
    from ..trainers.command import OUTPUT_TAIL

    try:
        with tempfile.TemporaryDirectory() as folder:
            tail = Path(tracker.download(run_id, OUTPUT_TAIL, folder)).read_text(errors="replace").splitlines()
    except Exception:  # no tail kept (the built-in trainer, or the run failed before the script started)
        return
    click.echo(f"the last lines it printed (artifact {OUTPUT_TAIL} of run {run_id}):", err=True)
    for line in tail[-20:]:
        click.echo(f"  {line}", err=True)


def where_it_went(tracker, experiment: str, what: str) -> None:
    """The closing block: which experiment and store hold the results, and how to look at them."""
    uri, name = redact_url(tracker.uri), tracker.experiment_alias(experiment)
    click.echo(f"results: experiment {name!r}, {what}, store {uri}")
    found = tracker.client.get_experiment_by_name(name)
    # MLflow 3.18's UI opens an experiment in its GenAI view unless the URL asks for the model-training one
    page = f"#/experiments/{found.experiment_id}/runs?workflowType=machine_learning" if found else ""
    if browsable_with_mlflow_ui(tracker.uri):
        click.echo(f"look:    mlflow ui --backend-store-uri {uri}, then http://127.0.0.1:5000/{page}")
    else:
        click.echo(f"look:    {uri.rstrip('/')}/{page}")


@cli.command()
@click.argument("study_name", metavar="STUDY")
@click.option(
    "--storage",
    default=None,
    help="Optuna storage: a journal file path or a database URL (default: optuna.journal beside the MLflow store).",
)
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True)
def analyze(study_name: str, storage: Optional[str], top: int) -> None:
    """Print a study's best configs and the narrower ranges to search next.

    Example: tunelog analyze demo-sweep --top 3
    """
    from ..sweep import best_trials, counts, default_storage, load_for_analysis, suggested_ranges
    from ..tracking import tracking_uri

    study = load_for_analysis(study_name, storage or default_storage(tracking_uri(create=False)))
    click.echo(f"study {study_name}: " + ", ".join(f"{v} {k}" for k, v in counts(study).items() if v))
    best = best_trials(study, top)
    for rank, tr in enumerate(best, 1):
        click.echo(f"{rank}. trial {tr.number}: {tr.values[0]:.4f}  {tr.params}")
    if not best:
        click.echo("no completed feasible trial yet")
        return
    click.echo("suggested next ranges (tunelog sweep SPEC --refine-from " + study_name + "):")
    for line in suggested_ranges(study, top) or ["the best trials span the whole space: widen it or sample more"]:
        click.echo(f"  {line}")


@cli.command()
@spec_options
@force_option
@click.option("--from-stage", type=click.IntRange(min=1), default=None, help="Rerun from stage K (1-based).")
@click.option("--from-sweep", default=None, metavar="STUDY", help="Start every stage from STUDY's best trial.")
@click.option("--storage", default=None, help="Optuna storage of --from-sweep's study.")
@click.option("--baseline", is_flag=True, help="Also train one stage of the same total steps on the last data.")
@click.option("--promote", "promote_to", default=None, metavar="MODEL", help="Register the winner as MODEL.")
def stages(
    spec_file: str,
    config: Optional[str],
    overrides: tuple[str, ...],
    force: bool,
    from_stage,
    from_sweep,
    storage,
    baseline: bool,
    promote_to: Optional[str],
) -> None:
    """Run SPEC's `pipeline:` stages, each starting from the previous stage's adapter.

    Example: tunelog stages examples/demo/demo.yaml --baseline --promote demo-lora
    """
    spec = load(spec_file, config, overrides)
    if from_sweep:
        from ..sweep import best_trial_overrides

        spec = spec.with_overrides(best_trial_overrides(spec, from_sweep, storage), f"best trial of {from_sweep}")
        click.echo(f"base config from the best trial of {from_sweep}")
    lint_gate(spec, force)
    from ..stages import Pipeline
    from ..tracking import Tracker

    tracker = Tracker()
    outcome = Pipeline(spec, tracker, from_stage=from_stage, baseline=baseline, echo=click.echo).run()
    for s in outcome.stages:
        shown = f"{s.result:.4f}" if s.result is not None else "n/a"
        click.echo(f"  {s.name}: {spec.tracking.metric}={shown} ({'reused ' if s.reused else ''}run {s.run_id})")
    click.echo(outcome.verdict)
    if promote_to:
        from ..promote import promote

        winner = outcome.winner(spec.tracking.direction)
        click.echo(promote(tracker, tracker.get_run(winner.run_id), promote_to).summary())
    from .. import changelog as cl

    cl.publish_summary(tracker, tracker.experiment_alias(spec.tracking.experiment))
    where_it_went(tracker, spec.tracking.experiment, f"pipeline run {outcome.run_id}")


@cli.command()
@spec_options
@force_option
@click.option(
    "--max-memory-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Memory budget in GB (default: the GPU's memory; on the CPU none: the machine's RAM is the limit).",
)
@click.option("--quick", is_flag=True, help="About six candidates.")
@click.option("--refine", is_flag=True, help="Also try the best's neighbours in each knob; two runoff rounds.")
@click.option("--exhaustive", is_flag=True, help="Measure every candidate (the slow baseline; for comparison).")
@click.option(
    "--effective-batch",
    type=click.IntRange(min=1),
    default=None,
    help="Hold batch x accumulation at N (default: probe.keep_effective_batch).",
)
@click.option("-o", "--output", default="train_best.sh", show_default=True, help="Where to write the training script.")
def probe(
    spec_file: str,
    config: Optional[str],
    overrides: tuple[str, ...],
    force: bool,
    max_memory_gb,
    quick: bool,
    refine: bool,
    exhaustive: bool,
    effective_batch: Optional[int],
    output: str,
) -> None:
    """Find the fastest config of SPEC that fits in memory, on a worst-case batch.

    Example: tunelog probe examples/demo/demo.yaml --max-memory-gb 0.9
    """
    spec = load(spec_file, config, overrides)
    lint_gate(spec, force)
    from ..probe import Probe
    from ..tracking import Tracker

    result = Probe(
        spec,
        Tracker(),
        max_memory_gb=max_memory_gb,
        quick=quick,
        refine=refine,
        echo=click.echo,
        exhaustive=exhaustive,
        effective_batch=effective_batch,
    ).run()
    s = result.summary()
    click.echo(
        f"{s['tested']} tested of {s['grid']}, {s['successful']} fit, {len(s['failed_oom'])} out of memory, "
        f"{len(s['skipped'])} skipped, {len(s['rejected'])} forbidden by the spec's rules; probe run {result.run_id}"
    )
    if result.best is None:
        raise TunelogError("no candidate fit in the memory budget: lower the batch sizes or raise --max-memory-gb")
    b = result.best
    eta = "unknown (no dataset size)" if b.eta_s is None else f"{b.eta_s / 60:.1f} min"
    click.echo(f"best: {b.values}: {b.samples_per_s:.1f} samples/s, peak {b.peak_gb:.3f} GB, ETA {eta}")
    note = _steps_note(spec, b.values)
    if note:
        click.echo(note)
    existed = Path(output).exists()
    Path(output).write_text(result.script)
    Path(output).chmod(0o755)
    click.echo(f"{'overwrote' if existed else 'wrote'} {output}")


FEW_STEPS = 10  # optimizer steps an epoch below which a probe's pick changes what a run learns


def _steps_note(spec, values: dict) -> Optional[str]:
    """What the fastest batch costs in optimizer steps on this data, where it leaves few of them an epoch: the
    probe ranks by samples/s, and a batch as large as the data leaves a run a handful of updates."""
    from ..spec.plan import make_plan
    from ..training.data import count_samples

    try:
        n = count_samples(spec, spec.data.train, "data.train")
    except TunelogError:
        return None
    picked, written = make_plan(spec.with_overrides(values, "probe best"), n), make_plan(spec, n)
    if picked.steps_per_epoch >= FEW_STEPS or picked.steps_per_epoch >= written.steps_per_epoch:
        return None
    return (
        f"note: on {n} samples the pick gives {picked.steps_per_epoch} optimizer steps an epoch "
        f"({picked.total_steps} in all) where the spec's batch gives {written.steps_per_epoch} "
        f"({written.total_steps}): faster per sample, fewer updates; raise train.epochs (or keep the spec's "
        f"batch) for the run to learn as much"
    )


@cli.command("study-server")
@click.option("--storage", required=True, help="The study database: postgresql://..., mysql://... or sqlite:///...")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", type=click.IntRange(1, 65535), default=13000, show_default=True)
@click.option(
    "--connections", type=click.IntRange(min=2), default=4, show_default=True,
    help="Database connections the server holds (2 or more), whatever the number of workers.",
)  # fmt: skip
def study_server(storage: str, host: str, port: int, connections: int) -> None:
    """Serve a study database to many sweep workers through Optuna's gRPC proxy (workers hold no connection).

    Example: tunelog study-server --storage postgresql://u:p@db/optuna --host 0.0.0.0; then on every worker
    tunelog sweep SPEC --storage grpc://THIS_HOST:13000
    """
    from ..sweep import open_storage
    from ..sweep.proxy import servable, serve

    servable(storage)
    serve(open_storage(storage, connections), storage, host, port, connections)
