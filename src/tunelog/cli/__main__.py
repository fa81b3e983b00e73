"""`python -m tunelog.cli`: what the console script runs (sweep workers start this way)."""

from . import main

main()
