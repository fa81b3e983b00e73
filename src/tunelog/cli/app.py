"""The click group and what every verb shares: SPEC/--config/--set, --force, the lint and model gate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click


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


def load(spec_file: str, config: Optional[str], overrides: tuple[str, ...]):
    from ..spec import load_spec, parse_set_options

    return load_spec(spec_file, config=config or None, overrides=parse_set_options(overrides))


@click.group()
@click.version_option(package_name="tunelog")
def cli() -> None:
    """tunelog: reproducible LoRA fine-tuning experiments on MLflow."""
    from ..tracking.store import pin_tracking_uri

    pin_tracking_uri()  # one absolute store for this command and every process it starts


force_option = click.option("--force", is_flag=True, help="Run even when lint finds errors.")


def lint_gate(spec, force: bool):
    """Before any work or run: the model must be reachable, and lint errors stop the command unless
    --force; the report goes on the run."""
    from ..errors import LintFailed
    from ..lint import lint_spec
    from ..training.hub import check_model_source

    check_model_source(spec)
    report = lint_spec(spec)
    if report.has_errors and not force:
        raise LintFailed(report.to_text() + "\nlint found errors: fix them, or pass --force to run anyway")
    for finding in report.of("warning"):
        click.echo(f"lint warning {finding.rule}: {finding.message}", err=True)
    return report


def leave_behind(
    tracker, experiment: str, best_run_id: Optional[str], promote_to: Optional[str], changelog_to: Optional[str]
) -> None:
    """What a finished sweep or pipeline can leave: the winner registered, the story written."""
    if promote_to and best_run_id:
        from ..promote import promote

        click.echo(promote(tracker, tracker.get_run(best_run_id), promote_to).summary())
    if changelog_to:
        from .. import changelog as cl

        log = cl.publish_summary(tracker, tracker.experiment_alias(experiment))
        existed = Path(changelog_to).exists()
        Path(changelog_to).write_text(cl.to_markdown(log))
        click.echo(f"{'overwrote' if existed else 'wrote'} {changelog_to}")
