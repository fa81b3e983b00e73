"""`probe`: the fastest training config that fits in memory, measured on a worst-case batch.

The model loads once; each candidate gets a fresh LoRA adapter on it, a few warm-up steps,
then steps until the throughput estimate settles. A candidate that runs out of memory
(CUDA OOM, or on the CPU a peak above --max-memory-gb) is recorded and the probe goes on.
Candidates that cannot fit are skipped before they run: anything at least as large in
every memory knob as one that ran out, and anything the measured peaks (a line in batch
size per group) predict over budget. Knobs that do not change memory (gradient
accumulation) are tried only on the three fastest configs that fit.

Modules: `measure` (what is measured, candidates, dominance, the `Measurer` protocol),
`search` (the `Probe`: what to run and skip, the runoff, the records), `inprocess` (the
built-in trainer's model, loaded once) and `command` (the user's own script, run per
candidate). Measurers take (spec, probe config, budget) and know nothing of the search.
"""

from .measure import Measurement, ProbeResult, at_least_as_large, grid, step_time, values_of
from .search import Probe

__all__ = ["Measurement", "Probe", "ProbeResult", "at_least_as_large", "grid", "step_time", "values_of"]
