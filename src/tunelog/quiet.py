"""Library noise that says nothing to a tunelog user, silenced once, when tunelog is imported.

- bitsandbytes logs "Failed to load CPU gemm_4bit_forward from kernels-community" on every
  import on a CPU without the optional `kernels` package, even when no 4-bit or 8-bit feature
  is used; its errors still show.
- peft asks transformers' `is_gradient_checkpointing`, which warns that transformers 6 will
  rename it: a deprecation inside our dependencies, not something the user can act on.
"""

from __future__ import annotations

import logging
import warnings


def quiet_libraries() -> None:
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
