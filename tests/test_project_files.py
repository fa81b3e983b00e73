"""The project's own files stay true: MLproject, conda.yaml, README, CLI help."""

import re

import tomllib
import yaml
from click.testing import CliRunner

from conftest import REPO
from tunelog.cli import cli


def test_every_mlproject_entry_point_has_its_script():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml"
    for name, entry in project["entry_points"].items():
        script = re.search(r"python (entry_points/\S+\.py)", entry["command"]).group(1)
        assert (REPO / script).is_file(), name


def test_conda_env_lists_every_dependency():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip_deps = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert sorted(deps) == sorted(pip_deps)


def test_readme_opens_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    assert "mlflow run . -e" in blocks[0] and "scripts/setup.sh" in blocks[0]
    assert "pytest" in blocks[1] and "scripts/setup.sh" in blocks[1]
    assert "pytest" in (REPO / ".ci/run").read_text()


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    for name in cli.commands:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example:" in result.output, f"`tunelog {name} --help` shows no example"
        assert name in (REPO / "README.md").read_text(), f"README does not mention `{name}`"


def test_the_readme_stays_under_ten_kilobytes():
    """The README is the front page: reference lives in docs/ (issue 26 found it at 12.7 kB)."""
    size = len((REPO / "README.md").read_bytes())
    assert size <= 10_000, f"README.md is {size:,} bytes; move reference to docs/"
