"""One error family for tunelog.

The CLI maps each class to an exit code and prints a single line, so a user
mistake never surfaces as a traceback.
"""

from __future__ import annotations


class TunelogError(Exception):
    """Base class: something tunelog could not do, with a message that says the fix."""

    exit_code = 1


class SpecError(TunelogError):
    """A spec that cannot be used: names the file, the field path and what is accepted."""

    exit_code = 2

    def __init__(self, file: str, problems: list[tuple[str, str]]):
        self.file = file
        self.problems = problems
        super().__init__("\n".join(f"{file}: {path}: {msg}" if path else f"{file}: {msg}" for path, msg in problems))


class MachineError(TunelogError):
    """The spec asks for something this machine cannot do (4-bit without CUDA, say)."""

    exit_code = 2


class LintFailed(TunelogError):
    """Lint found errors and the command was not forced: nothing was trained."""

    exit_code = 2


class SweepStuck(TunelogError):
    """The constraints rejected config after config: the space has (almost) no feasible point."""

    exit_code = 2


class TrainingFailed(TunelogError):
    """Training ended with an outcome other than ok (diverged, oom, failed): not the spec's fault."""

    exit_code = 3


class TrainingInterrupted(TunelogError):
    """Raised in the main thread on SIGTERM so that runs end KILLED, not RUNNING."""

    exit_code = 143
