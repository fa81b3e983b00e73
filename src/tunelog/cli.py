"""The `tunelog` command: thin click commands over library calls.

Errors from the TunelogError family print one line (or one per spec problem)
and exit with their class's code; a user mistake never prints a traceback.
"""
from __future__ import annotations

import sys
from typing import Optional

import click

from .errors import TunelogError


def spec_options(fn):
    """SPEC, --config and --set: shared by every command that reads a spec."""
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override a spec field by dotted path, e.g. --set train.learning_rate=1e-4.")(fn)
    fn = click.option("--config", "config", default=None, metavar="NAME",
                      help="Apply a named preset from the spec's `configs:` section.")(fn)
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
    click.echo(f"run {run_id}: outcome {result.outcome}{' (' + result.reason + ')' if result.reason else ''}, "
               f"{result.steps} steps, {shown}; store {tracker.uri}")
    if result.outcome != "ok":
        sys.exit(3)


def lint_gate(spec, force: bool):
    """Lint before any work: errors stop the command unless --force; the report goes on the run."""
    from .errors import LintFailed
    from .lint import lint_spec

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
    from .lint import facts_for
    from .plots import lr_schedule

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
