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


@cli.command()
@spec_options
def train(spec_file: str, config: Optional[str], overrides: tuple[str, ...]) -> None:
    """Fine-tune with LoRA from SPEC and record one MLflow run.

    Example: tunelog train examples/demo/demo.yaml --config balanced
    """
    spec = _load(spec_file, config, overrides)  # validate before importing torch: bad input fails fast
    from .tracking import Tracker
    from .train import run_training

    tracker = Tracker()
    run_id, result = run_training(spec, tracker)
    metric = spec.tracking.metric
    value = result.metrics.get(metric)
    shown = f"{metric}={value:.4f}" if value is not None else f"{metric}=n/a"
    click.echo(f"run {run_id}: outcome {result.outcome}{' (' + result.reason + ')' if result.reason else ''}, "
               f"{result.steps} steps, {shown}; store {tracker.uri}")
    if result.outcome != "ok":
        sys.exit(3)


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
