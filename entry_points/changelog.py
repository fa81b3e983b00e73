"""MLproject entry point `changelog`: tunelog changelog --experiment NAME -o FILE."""

import sys

from _tunelog import run

if __name__ == "__main__":
    run("changelog", sys.argv[1:])
