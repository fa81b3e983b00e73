"""Library noise that says nothing to a tunelog user, silenced once, when tunelog is imported.

- bitsandbytes logs "Failed to load CPU gemm_4bit_forward from kernels-community" on every
  import on a CPU without the optional `kernels` package, even when no 4-bit or 8-bit feature
  is used; its errors still show.
- peft asks transformers' `is_gradient_checkpointing`, which warns that transformers 6 will
  rename it: a deprecation inside our dependencies, not something the user can act on.
- MLflow's system metrics monitor says at INFO, for every run, that it started, stopped and found no
  GPU; its transformers flavor says on each adapter it logs where the base will be loaded from, and on
  each predict that params override the saved config; its store logs every SQL error's traceback
  (a full disk) before raising it, and tunelog's CLI names the cause in one line.
"""

from __future__ import annotations

import logging
import sys
import warnings


def quiet_libraries() -> None:
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)  # "the base model will be referenced..."
    # MLflow logs each SQL error with its traceback and then raises it; tunelog's CLI says it in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def import_peft(needs_bitsandbytes: bool) -> None:
    """Import peft, hiding bitsandbytes from it when the run needs neither 4/8-bit weights nor anything
    else of it yet.

    Why: peft imports bitsandbytes eagerly (`peft.helpers`), which costs 4 s on every process start on
    this CPU (a sweep's worker, `tunelog train`, `load_model`) and prints a kernels notice, for runs
    that never quantize. Hidden (`sys.modules` entry None), peft's import skips it and notes it as absent;
    the entry is removed right after, so the 8-bit optimizer can still import bitsandbytes itself."""
    if "peft" in sys.modules or needs_bitsandbytes or "bitsandbytes" in sys.modules:
        import peft  # noqa: F401

        return
    sys.modules["bitsandbytes"] = None  # type: ignore[assignment]
    try:
        import peft.import_utils as available

        available.is_bnb_available()  # cached: peft's later LoRA dispatch asks again, not the disk
        available.is_bnb_4bit_available()
    finally:
        if "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None:
            del sys.modules["bitsandbytes"]


def no_loading_bars() -> None:
    """transformers 5 draws a "Loading weights" bar on every `from_pretrained`, on stderr, into every run's
    console and every served model's log; tunelog's own progress line says what the process is doing."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
