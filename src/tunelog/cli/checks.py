"""Verbs that check a spec without training: lint, schedule."""

from __future__ import annotations

import sys
from typing import Optional

import click

from .app import cli, load, spec_options


@cli.command()
@spec_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def lint(spec_file: str, config: Optional[str], overrides: tuple[str, ...], fmt: str) -> None:
    """Check SPEC for config mistakes; exit 1 when there are errors.

    Example: tunelog lint examples/demo/demo.yaml --config balanced --format json
    """
    from ..lint import lint_spec

    report = lint_spec(load(spec_file, config, overrides))
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
    from ..plots import lr_schedule
    from ..rules import facts_for

    sched = facts_for(load(spec_file, config, overrides)).plan.schedule
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
