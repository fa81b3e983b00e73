"""Verbs that read or mend the store's history: changelog, based-on, import, promote, reproduce, gc."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from ..util.redact import redact_url
from ..vocabulary import Outcome
from .app import cli

DIRECTIONS = ["min", "max", "minimize", "maximize"]


@cli.command()
@click.option("--experiment", required=True, help="The MLflow experiment to write the story of.")
@click.option("-o", "--output", default=None, help="Write here (default: print).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
@click.option("--metric", default=None, help="Headline metric (default: the runs' tunelog.metric).")
@click.option("--direction", type=click.Choice(DIRECTIONS), default=None, help="min/minimize or max/maximize.")
@click.option("--phases", "phases_file", default=None, help="YAML: phase name -> run-name patterns (run16_*).")
@click.option("--verbose", is_flag=True, help="List every unchanged key under Kept.")
@click.option("--no-log", is_flag=True, help="Do not log the changelog to the store as an artifact.")
def changelog(
    experiment: str, output: Optional[str], fmt: str, metric, direction, phases_file, verbose: bool, no_log: bool
) -> None:
    """Write the run-evolution changelog of an experiment from the tracking store.

    Example: tunelog changelog --experiment demo -o CHANGELOG.md
    """
    from .. import changelog as cl
    from .. import tracking as t
    from ..changelog.phases import read_phases

    named = read_phases(phases_file) if phases_file else None
    tracker = t.Tracker(reading=True)
    log = cl.collect_and_build(
        tracker, experiment, metric=metric, direction=direction, verbose=verbose, phase_names=named
    )
    text = cl.to_json(log) if fmt == "json" else cl.to_markdown(log)
    if output:
        existed = Path(output).exists()
        Path(output).write_text(text)
        click.echo(
            f"{'overwrote' if existed else 'wrote'} {output}: {len(log.entries)} runs, best {log.best_id or 'none'}"
        )
    else:
        click.echo(text, nl=False)
    if not no_log:
        with tracker.run(experiment, run_name="changelog", tags={t.TAG_KIND: t.KIND_CHANGELOG}) as run:
            run.log_text(text, "CHANGELOG.json" if fmt == "json" else "CHANGELOG.md")
        tracker.set_experiment_note(experiment, cl.to_summary(log))


@cli.command("diff")
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option("--experiment", default=None, help="Find RUN_A and RUN_B by name in this experiment.")
@click.option("--md", "markdown", is_flag=True, help="Markdown tables (for a PR or a notebook).")
@click.option("--only-changed", is_flag=True, help="Leave out params and metrics that are equal.")
@click.option("--all", "show_all", is_flag=True, help="List equal params one by one, and system/* metrics.")
def diff(run_a: str, run_b: str, experiment: Optional[str], markdown: bool, only_changed: bool, show_all: bool) -> None:
    """What differs between two runs: params, final metrics with deltas, outcome, duration, lineage.

    Example: tunelog diff baseline rank16 --experiment demo --only-changed
    """
    from .. import tracking as t
    from ..changelog.compare import compare, resolve, to_text

    tracker = t.Tracker(reading=True)
    a, b = resolve(tracker, run_a, experiment), resolve(tracker, run_b, experiment)
    click.echo(to_text(compare(tracker, a, b), markdown, only_changed, show_all), nl=False)


@cli.command("based-on")
@click.argument("run_id", metavar="RUN")
@click.argument("parent_id", metavar="PARENT")
def based_on(run_id: str, parent_id: str) -> None:
    """Record that RUN derives from PARENT (the changelog's lineage).

    Example: tunelog based-on 3f2a... 9b1c...
    """
    from .. import tracking as t

    tracker = t.Tracker(reading=True)
    for rid in (run_id, parent_id):
        tracker.get_run(rid)
    tracker.set_tags(run_id, {t.TAG_BASED_ON: parent_id})
    click.echo(f"{run_id} is now based on {parent_id}")


@cli.command("import")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("--experiment", required=True, help="The MLflow experiment to import into.")
@click.option("--metric", default=None, help="Headline metric (default: your eval files' number, else eval/loss...).")
@click.option(
    "--direction",
    type=click.Choice(["minimize", "maximize"]),
    default=None,
    help="Whether lower or higher is better (default: from the metric's name; losses and errors lower).",
)
@click.option(
    "--pattern",
    "patterns",
    multiple=True,
    metavar="REGEX",
    help="Extra metric regex with named groups key and value (and optionally step).",
)
@click.option(
    "--metrics-file",
    "metrics_files",
    multiple=True,
    metavar="GLOB",
    help="Your eval files (default: eval.json, metrics.json, results.json, *.jsonl); repeatable.",
)
@click.option(
    "--ignore-keys",
    "ignore_keys",
    multiple=True,
    metavar="GLOB",
    help="Config keys that name a run rather than change it (recorded, never compared); repeatable.",
)
@click.option(
    "--project", default=None, help="One project for every run (default: each run's first folder under ROOT)."
)
@click.option("--dry-run", is_flag=True, help="Say which folders are runs, read by what, named how; write nothing.")
def import_(
    root: str,
    experiment: str,
    metric,
    direction,
    patterns: tuple[str, ...],
    metrics_files: tuple[str, ...],
    ignore_keys: tuple[str, ...],
    project: Optional[str],
    dry_run: bool,
) -> None:
    """Import run folders under ROOT as MLflow runs, once: kohya sd-scripts, Hugging Face Trainer, Lightning,
    TensorBoard events, your eval files, or a config and a log.

    Example: tunelog import old_runs/ --experiment sdxl-lora --metrics-file 'eval*.json'
    """
    from ..importer import import_tree
    from ..tracking import Tracker

    ignore = tuple(g.strip() for item in ignore_keys for g in item.split(",") if g.strip())
    report = import_tree(
        Path(root),
        None if dry_run else Tracker(),  # a dry run opens no store (and so creates none)
        experiment,
        metric=metric,
        patterns=patterns,
        direction=direction,
        metrics_files=metrics_files,
        ignore_keys=ignore,
        project=project,
        dry_run=dry_run,
    )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    for folder, why in report.not_runs:
        click.echo(f"not a run: {folder}: {why}", err=True)
    if dry_run:
        for folder, readers, name in report.planned:
            click.echo(f"{folder} -> {', '.join(readers)} -> {name}")
        click.echo(f"{len(report.planned)} runs would be imported; {len(report.not_runs)} folders are no run")
        return
    click.echo(
        f"imported {len(report.imported)} runs, {len(report.skipped)} already there, "
        f"{len(report.not_runs)} folders no run, {len(report.warnings)} warnings"
    )


@cli.command("promote")
@click.option("--experiment", default=None, help="Promote the best run of this experiment.")
@click.option("--run", "run_id", default=None, help="Promote this run.")
@click.option("--name", "model", default=None, help="Registered model name (default: EXPERIMENT-lora).")
@click.option("--metric", default=None, help="Metric to judge by (default: the run's tunelog.metric).")
def promote_cmd(experiment: Optional[str], run_id: Optional[str], model: Optional[str], metric) -> None:
    """Register the best run's adapter; move the `champion` alias only if it beats the champion.

    Example: tunelog promote --experiment demo   (registers demo-lora)
    """
    from ..promote import best_run, promote
    from ..tracking import Tracker

    if bool(experiment) == bool(run_id):
        raise click.UsageError("give exactly one of --experiment or --run")
    tracker = Tracker(reading=True)
    runs = None if run_id else tracker.all_runs(experiment)  # read once: the pick and the version's description
    run = tracker.get_run(run_id) if run_id else best_run(tracker, experiment, metric, runs)
    if not model:  # the name the sweep's and the stages' --promote examples use: demo -> demo-lora
        model = f"{experiment or run.experiment_name}-lora"
    click.echo(promote(tracker, run, model, metric, runs).summary())


@cli.command("serve")
@click.argument("model_ref", metavar="MODEL")
@click.option("--port", type=int, default=5001, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def serve(model_ref: str, port: int, host: str) -> None:
    """Serve a registered version with MLflow's own server, on the store tunelog reads (no stray store).

    MODEL is NAME@ALIAS, NAME/VERSION or models:/NAME@ALIAS. Example: tunelog serve demo-lora@champion
    """
    import os

    from ..tracking import resolve_model_uri, tracking_uri

    uri = model_ref if model_ref.startswith("models:/") else f"models:/{model_ref}"
    resolve_model_uri(uri)  # a name or alias the store lacks: one line naming the store, before any server starts
    store = tracking_uri(create=False)
    click.echo(f"serving {uri} from {store} on http://{host}:{port}/invocations", err=True)
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local"]
    argv += ["--host", host, "--port", str(port)]
    # MLflow starts `uvicorn` by name: this interpreter's scripts first, so `.venv/bin/tunelog serve` works
    # from a shell that never activated the environment
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    os.execve(sys.executable, argv, {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": path})  # this store


@cli.command("reproduce")
@click.argument("run_id", metavar="RUN")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Where the data is here: data.train=PATH.")
def reproduce_cmd(run_id: str, overrides: tuple[str, ...]) -> None:
    """Rerun RUN from the spec it logged and print how its final metrics compare.

    Example: tunelog reproduce 3f2a9c... --set data.train=/data/train.txt
    """
    from ..reproduce import reproduce
    from ..spec import parse_set_options
    from ..tracking import Tracker

    new_id, pairs = reproduce(Tracker(reading=True), run_id, parse_set_options(overrides))
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
    from ..tracking import Tracker

    tracker = Tracker(reading=True)
    stale = tracker.stale_runs(_seconds(older_than))
    for record, why in stale:
        if yes:
            tracker.close_run(record.run_id, "KILLED", Outcome.FAILED, why)
        click.echo(f"{'closed' if yes else 'would close'} {record.run_id} ({record.name}): {why}")
    click.echo(
        f"{len(stale)} stale run(s) in {redact_url(tracker.uri)}" + ("" if yes or not stale else "; --yes closes them")
    )


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
