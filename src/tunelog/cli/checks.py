"""Verbs that check a spec without training: lint, schedule."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from .app import cli, load, spec_options


@cli.command()
@spec_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def lint(spec_file: str, config: Optional[str], overrides: tuple[str, ...], fmt: str) -> None:
    """Check SPEC for config mistakes: exit 1 when lint finds errors, 2 when the spec itself is invalid (every
    problem listed with its field), 0 otherwise (warnings included).

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
    from ..training.facts import facts_for
    from ..training.plots import lr_schedule

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


@cli.command()
@click.option("--model", required=True, help="A Hugging Face id or a local model folder.")
@click.option("--data", "data", required=True, type=click.Path(exists=True, dir_okay=False), help="Training data.")
@click.option(
    "--preset",
    type=click.Choice(["lora-small", "qlora-7b", "command"]),
    default="lora-small",
    show_default=True,
    help="What the starter spec is set up for.",
)
@click.option("--gguf", default=None, help="A GGUF file in the --model folder: its weights, converted once.")
@click.option("-o", "--output", default="spec.yaml", show_default=True, help="Where to write the spec.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(model: str, data: str, preset: str, gguf: Optional[str], output: str, force: bool) -> None:
    """Write a commented starter spec for your model and data (named configs, a search space, rules).

    Example: tunelog init --model Qwen/Qwen2.5-0.5B --data train.jsonl --preset lora-small -o spec.yaml
    """
    from ..lint import lint_spec
    from ..spec.starter import write_starter

    path = write_starter(Path(output), model, data, preset, force, gguf)
    report = lint_spec(load(str(path), None, ()))
    click.echo(f"wrote {path} ({preset}): {report.summary().split(': ', 1)[1]}")
    click.echo(f"next: tunelog configs ls {path}; tunelog train {path} --config baseline")


@cli.group()
def configs() -> None:
    """The named configs of a spec.

    Example: tunelog configs ls examples/demo/demo.yaml
    """


@configs.command("ls")
@click.argument("spec_file", metavar="SPEC", type=click.Path(dir_okay=False))
def configs_ls(spec_file: str) -> None:
    """List SPEC's named configs with their purpose and overrides.

    Example: tunelog configs ls examples/demo/demo.yaml
    """
    spec = load(spec_file, None, ())
    if not spec.configs:
        click.echo(f"{spec_file}: no named configs (add them under `configs:`)")
    for name, preset in spec.configs.items():
        changes = ", ".join(f"{k}={v}" for k, v in preset.overrides.items()) or "the spec as written"
        click.echo(f"{name:<12} {(preset.purpose or '').strip()}")
        click.echo(f"{'':<12} {changes}")
