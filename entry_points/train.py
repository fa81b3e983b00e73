"""MLproject entry point `train` (and `main`): tunelog train SPEC [--config NAME]."""

import sys

from _tunelog import run

if __name__ == "__main__":
    run("train", sys.argv[1:])
