"""MLproject entry point `promote`: tunelog promote --experiment NAME --name MODEL."""

import sys

from _tunelog import run

if __name__ == "__main__":
    run("promote", sys.argv[1:])
