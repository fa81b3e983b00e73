"""The `tunelog` command: thin click commands over library calls.

Errors from the TunelogError family print one line (or one per spec problem)
and exit with their class's code; a user mistake never prints a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from .errors import TunelogError


def spec_options(fn):
    """SPEC, --config and --set: shared by every command that reads a spec."""
    fn = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a spec field by dotted path, e.g. --set train.learning_rate=1e-4.",
    )(fn)
    fn = click.option(
        "--config",
        "config",
        default=None,
        metavar="NAME",
        help="Apply a named preset from the spec's `configs:` section.",
    )(fn)
    return click.argument("spec_file", metavar="SPEC", type=click.Path(dir_okay=False))(fn)


def _load(spec_file: str, config: Optional[str], overrides: tuple[str, ...]):
    from .spec import load_spec, parse_set_options

    return load_spec(spec_file, config=config or None, overrides=parse_set_options(overrides))


@click.group()
@click.version_option(package_name="tunelog")
def cli() -> None:
    """tunelog: reproducible LoRA fine-tuning experiments on MLflow."""


force_option = click.option("--force", is_flag=True, help="Run even when lint finds errors.")


@cli.command()
@spec_options
@force_option
def train(spec_file: str, config: Optional[str], overrides: tuple[str, ...], force: bool) -> None:
    """Fine-tune with LoRA from SPEC and record one MLflow run (lint runs first).

    Example: tunelog train examples/demo/demo.yaml --config balanced
    """
    spec = _load(spec_file, config, overrides)  # validate before importing torch: bad input fails fast
    report = lint_gate(spec, force)
    from .tracking import Tracker
    from .train import run_training

    tracker = Tracker()
    run_id, result = run_training(spec, tracker, lint=report)
    metric = spec.tracking.metric
    value = result.metrics.get(metric)
    shown = f"{metric}={value:.4f}" if value is not None else f"{metric}=n/a"
    click.echo(
        f"run {run_id}: outcome {result.outcome}{' (' + result.reason + ')' if result.reason else ''}, "
        f"{result.steps} steps, {shown}; store {tracker.uri}"
    )
    if result.outcome != "ok":
        sys.exit(3)


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
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Local worker processes.")
@click.option("--force-resume", is_flag=True, help="Go on with a study started with another search space.")
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
    workers: int,
    force_resume: bool,
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
    spec = _load(spec_file, config, overrides)
    if not worker:
        lint_gate(spec, force)
    from .sweep import Sweep, SweepOptions
    from .tracking import Tracker

    opts = SweepOptions(
        n_trials=n_trials,
        timeout=timeout,
        quick=quick,
        storage=storage,
        study=study,
        workers=workers,
        force_resume=force_resume,
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
    click.echo(
        f"study {summary.study}: {c['complete']} complete, {c['pruned']} pruned, {c['rejected']} rejected, "
        f"{c['failed']} failed; sweep run {summary.sweep_run_id}"
    )
    if summary.best_trial is not None:
        click.echo(
            f"best: trial {summary.best_trial} {spec.tracking.metric}={summary.best_value:.4f} "
            f"{summary.best_params} (run {summary.best_run_id})"
        )
    _leave_behind(runner.tracker, spec.tracking.experiment, summary.best_run_id, promote_to, changelog_to)


def _leave_behind(
    tracker, experiment: str, best_run_id: Optional[str], promote_to: Optional[str], changelog_to: Optional[str]
) -> None:
    """What a finished sweep or pipeline can leave: the winner registered, the story written."""
    if promote_to and best_run_id:
        from .promote import promote

        click.echo(promote(tracker, tracker.get_run(best_run_id), promote_to).summary())
    if changelog_to:
        from . import changelog as cl

        Path(changelog_to).write_text(cl.to_markdown(cl.collect_and_build(tracker, experiment)))
        click.echo(f"wrote {changelog_to}")


@cli.command()
@click.argument("study_name", metavar="STUDY")
@click.option("--storage", default=None, help="Optuna storage URL (default: SQLite beside the MLflow store).")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True)
def analyze(study_name: str, storage: Optional[str], top: int) -> None:
    """Print a study's best configs and the narrower ranges to search next.

    Example: tunelog analyze demo-sweep --top 3
    """
    from .sweep import best_trials, counts, default_storage, load_for_analysis, suggested_ranges
    from .tracking import tracking_uri

    study = load_for_analysis(study_name, storage or default_storage(tracking_uri()))
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
@click.option("--experiment", required=True, help="The MLflow experiment to write the story of.")
@click.option("-o", "--output", default=None, help="Write here (default: print).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
@click.option("--metric", default=None, help="Headline metric (default: the runs' tunelog.metric).")
@click.option("--direction", type=click.Choice(["minimize", "maximize"]), default=None)
@click.option("--verbose", is_flag=True, help="List every unchanged key under Kept.")
@click.option("--no-log", is_flag=True, help="Do not log the changelog to the store as an artifact.")
def changelog(experiment: str, output: Optional[str], fmt: str, metric, direction, verbose: bool, no_log: bool) -> None:
    """Write the run-evolution changelog of an experiment from the tracking store.

    Example: tunelog changelog --experiment demo -o CHANGELOG.md
    """
    from . import changelog as cl
    from . import tracking as t

    tracker = t.Tracker()
    log = cl.collect_and_build(tracker, experiment, metric=metric, direction=direction, verbose=verbose)
    text = cl.to_json(log) if fmt == "json" else cl.to_markdown(log)
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {output}: {len(log.entries)} runs, best {log.best_id or 'none'}")
    else:
        click.echo(text, nl=False)
    if not no_log:
        with tracker.run(experiment, run_name="changelog", tags={t.TAG_KIND: t.KIND_CHANGELOG}) as run:
            run.log_text(text, "CHANGELOG.json" if fmt == "json" else "CHANGELOG.md")


@cli.command("based-on")
@click.argument("run_id", metavar="RUN")
@click.argument("parent_id", metavar="PARENT")
def based_on(run_id: str, parent_id: str) -> None:
    """Record that RUN derives from PARENT (the changelog's lineage).

    Example: tunelog based-on 3f2a... 9b1c...
    """
    from . import tracking as t

    tracker = t.Tracker()
    for rid in (run_id, parent_id):
        tracker.get_run(rid)
    tracker.set_tags(run_id, {t.TAG_BASED_ON: parent_id})
    click.echo(f"{run_id} is now based on {parent_id}")


@cli.command("import")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("--experiment", required=True, help="The MLflow experiment to import into.")
@click.option("--metric", default=None, help="Headline metric (default: eval_loss, val_loss... as found).")
@click.option("--direction", type=click.Choice(["minimize", "maximize"]), default="minimize", show_default=True)
@click.option(
    "--pattern",
    "patterns",
    multiple=True,
    metavar="REGEX",
    help="Extra metric regex with named groups key and value (and optionally step).",
)
def import_(root: str, experiment: str, metric, direction: str, patterns: tuple[str, ...]) -> None:
    """Import legacy run folders (a config and a log each) under ROOT as MLflow runs, once.

    Example: tunelog import old_runs/ --experiment speech-decoder
    """
    from .importer import import_tree
    from .tracking import Tracker

    report = import_tree(Path(root), Tracker(), experiment, metric=metric, patterns=patterns, direction=direction)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"imported {len(report.imported)} runs, {len(report.skipped)} already there, "
        f"{len(report.warnings)} skipped with a warning"
    )


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
    spec = _load(spec_file, config, overrides)
    if from_sweep:
        from .sweep import best_trial_overrides

        spec = spec.with_overrides(best_trial_overrides(spec, from_sweep, storage), f"best trial of {from_sweep}")
        click.echo(f"base config from the best trial of {from_sweep}")
    lint_gate(spec, force)
    from .stages import Pipeline
    from .tracking import Tracker

    tracker = Tracker()
    outcome = Pipeline(spec, tracker, from_stage=from_stage, baseline=baseline, echo=click.echo).run()
    for s in outcome.stages:
        shown = f"{s.result:.4f}" if s.result is not None else "n/a"
        click.echo(f"  {s.name}: {spec.tracking.metric}={shown} ({'reused ' if s.reused else ''}run {s.run_id})")
    click.echo(outcome.verdict)
    if promote_to:
        from .promote import promote

        winner = outcome.winner(spec.tracking.direction)
        click.echo(promote(tracker, tracker.get_run(winner.run_id), promote_to).summary())


@cli.command()
@spec_options
@force_option
@click.option(
    "--max-memory-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Memory budget (default: the GPU's; required on the CPU).",
)
@click.option("--quick", is_flag=True, help="About six candidates.")
@click.option("--refine", is_flag=True, help="Also try the best's neighbours in each knob; two runoff rounds.")
@click.option("--exhaustive", is_flag=True, help="Measure every candidate (the slow baseline; for comparison).")
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
    output: str,
) -> None:
    """Find the fastest config of SPEC that fits in memory, on a worst-case batch.

    Example: tunelog probe examples/demo/demo.yaml --max-memory-gb 0.9
    """
    spec = _load(spec_file, config, overrides)
    lint_gate(spec, force)
    from .probe import Probe
    from .tracking import Tracker

    result = Probe(
        spec, Tracker(), max_memory_gb=max_memory_gb, quick=quick, refine=refine, echo=click.echo, exhaustive=exhaustive
    ).run()
    s = result.summary()
    click.echo(
        f"{s['tested']} tested of {s['grid']}, {s['successful']} fit, {len(s['failed_oom'])} out of memory, "
        f"{len(s['skipped'])} skipped; probe run {result.run_id}"
    )
    if result.best is None:
        raise TunelogError("no candidate fit in the memory budget: lower the batch sizes or raise --max-memory-gb")
    b = result.best
    eta = "unknown (no dataset size)" if b.eta_s is None else f"{b.eta_s / 60:.1f} min"
    click.echo(f"best: {b.values}: {b.samples_per_s:.1f} samples/s, peak {b.peak_gb:.3f} GB, ETA {eta}")
    Path(output).write_text(result.script)
    Path(output).chmod(0o755)
    click.echo(f"wrote {output}")


@cli.command("promote")
@click.option("--experiment", default=None, help="Promote the best run of this experiment.")
@click.option("--run", "run_id", default=None, help="Promote this run.")
@click.option("--name", "model", default=None, help="Registered model name (default: the experiment's).")
@click.option("--metric", default=None, help="Metric to judge by (default: the run's tunelog.metric).")
def promote_cmd(experiment: Optional[str], run_id: Optional[str], model: Optional[str], metric) -> None:
    """Register the best run's adapter; move the `champion` alias only if it beats the champion.

    Example: tunelog promote --experiment demo --name demo-lora
    """
    from .promote import best_run, promote
    from .tracking import Tracker

    if bool(experiment) == bool(run_id):
        raise click.UsageError("give exactly one of --experiment or --run")
    tracker = Tracker()
    run = tracker.get_run(run_id) if run_id else best_run(tracker, experiment, metric)
    if not model:
        model = experiment or run.experiment_name
    click.echo(promote(tracker, run, model, metric).summary())


@cli.command("reproduce")
@click.argument("run_id", metavar="RUN")
def reproduce_cmd(run_id: str) -> None:
    """Rerun RUN from the spec it logged and print how its final metrics compare.

    Example: tunelog reproduce 3f2a9c...
    """
    from .reproduce import reproduce
    from .tracking import Tracker

    new_id, pairs = reproduce(Tracker(), run_id)
    click.echo(f"reproduced {run_id} as {new_id}")
    click.echo(f"{'metric':<28} {'original':>12} {'reproduced':>12} {'difference':>12}")
    for key, (a, b) in pairs.items():
        click.echo(f"{key:<28} {a:>12.6g} {b:>12.6g} {b - a:>12.3g}")


@cli.command()
@click.option(
    "--older-than",
    "older_than",
    default="30m",
    show_default=True,
    metavar="AGE",
    help="Only runs with nothing logged for this long: 90s, 30m, 2h.",
)
@click.option("--yes", is_flag=True, help="Close them (without it: only list what would be closed).")
def gc(older_than: str, yes: bool) -> None:
    """Close runs left RUNNING with no live process (KILLED, with the reason); a dry run unless --yes.

    Example: tunelog gc --older-than 30m --yes
    """
    from .tracking import Tracker

    tracker = Tracker()
    stale = tracker.stale_runs(_seconds(older_than))
    for record, why in stale:
        if yes:
            tracker.close_run(record.run_id, "KILLED", "failed", why)
        click.echo(f"{'closed' if yes else 'would close'} {record.run_id} ({record.name}): {why}")
    click.echo(f"{len(stale)} stale run(s) in {tracker.uri}" + ("" if yes or not stale else "; --yes closes them"))


def _seconds(age: str) -> float:
    """`90s`, `30m`, `2h`, `1d` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = age.strip().lower()
    try:
        return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise click.BadParameter(
            f"expected an age such as 90s, 30m, 2h (got {age!r})", param_hint="--older-than"
        ) from None


def lint_gate(spec, force: bool):
    """Before any work or run: the model must be reachable, and lint errors stop the command unless
    --force; the report goes on the run."""
    from .errors import LintFailed
    from .hub import check_model_source
    from .lint import lint_spec

    check_model_source(spec)
    report = lint_spec(spec)
    if report.has_errors and not force:
        raise LintFailed(report.to_text() + "\nlint found errors: fix them, or pass --force to run anyway")
    for finding in report.of("warning"):
        click.echo(f"lint warning {finding.rule}: {finding.message}", err=True)
    return report


@cli.command()
@spec_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def lint(spec_file: str, config: Optional[str], overrides: tuple[str, ...], fmt: str) -> None:
    """Check SPEC for config mistakes; exit 1 when there are errors.

    Example: tunelog lint examples/demo/demo.yaml --config balanced --format json
    """
    from .lint import lint_spec

    report = lint_spec(_load(spec_file, config, overrides))
    click.echo(report.to_json() if fmt == "json" else report.to_text())
    if report.has_errors:
        sys.exit(1)


@cli.command()
@spec_options
@click.option("-o", "--output", default="lr_schedule.png", show_default=True, help="Where to write the PNG.")
@click.option("--at", "at", default="", metavar="STEP,STEP", help="Also print the LR at these steps.")
def schedule(spec_file: str, config: Optional[str], overrides: tuple[str, ...], output: str, at: str) -> None:
    """Print SPEC's learning rate at its milestones (warmup end, anneals, quarters, last step) and draw it.

    Example: tunelog schedule examples/fastspeech2/fastspeech2_fixed.yaml --at 1000,100000 -o lr.png
    """
    from .plots import lr_schedule
    from .rules import facts_for

    sched = facts_for(_load(spec_file, config, overrides)).plan.schedule
    click.echo(f"{sched.name}: peak {sched.peak_lr:.6g}, warmup {sched.warmup_steps}, {sched.total_steps} steps")
    click.echo(f"{'step':>10}  {'lr':>12}")
    try:
        extra = {int(x.replace("_", "")) for x in at.split(",") if x.strip()}
    except ValueError:
        raise click.BadParameter(f"expected comma-separated step numbers, got {at!r}", param_hint="--at") from None
    for step in sorted(set(sched.milestones()) | extra):
        click.echo(f"{step:>10}  {sched.lr_at(step):>12.6g}")
    lr_schedule(sched).savefig(output)
    click.echo(f"wrote {output}")


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: maps the TunelogError family to one line and its exit code."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TunelogError as exc:
        click.echo(f"error: {exc}" if exc.exit_code != 2 else str(exc), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
