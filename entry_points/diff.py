"""MLproject entry point `diff`: tunelog diff RUN_A RUN_B --experiment NAME --md."""

import sys

from _tunelog import run

if __name__ == "__main__":
    run("diff", sys.argv[1:])
