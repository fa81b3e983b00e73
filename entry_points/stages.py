"""MLproject entry point `stages`: tunelog stages SPEC [--baseline] [--promote MODEL]."""

import sys

from _tunelog import run

if __name__ == "__main__":
    run("stages", sys.argv[1:], flags=("--baseline",))
