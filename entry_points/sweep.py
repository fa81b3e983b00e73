"""MLproject entry point `sweep`: tunelog sweep SPEC [--n-trials N] [--quick]."""

import sys

from _tunelog import run

if __name__ == "__main__":
    run("sweep", sys.argv[1:], flags=("--quick",))
