"""MLproject entry point `probe`: tunelog probe SPEC --max-memory-gb GB [--quick] -o SCRIPT."""

import sys

from _tunelog import run

if __name__ == "__main__":
    run("probe", sys.argv[1:], flags=("--quick",))
