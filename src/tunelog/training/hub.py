"""Can the spec's model be had? Asked once, before any run is created.

Left to transformers, a hub id that cannot be fetched costs a minute of retries and ends
in a 35-frame traceback and a FAILED run. Here it is one line that names the id, the
cause (offline, not found, gated) and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MachineError
from ..trainers.registry import capabilities
from .model_source import PACKAGE_PREFIX, package_folder


def check_model_source(spec: Any, timeout: float = 10.0) -> None:
    """Raises MachineError when `model.name` is neither a local folder, nor cached, nor fetchable."""
    name = spec.model.name
    if not capabilities(spec.trainer.type).loads_spec_model:  # a script loads its own; model.name is its label
        return
    if name is None or Path(name).expanduser().exists() or spec.path(name).exists():
        return
    if name.startswith(PACKAGE_PREFIX):
        package_folder(name, spec.source)  # one line naming the package when it is not installed
        return
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.constants import is_offline_mode
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    where = f"{spec.source}: model.name: {name!r}"
    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return
    except HFValidationError:
        raise MachineError(
            f"{where} is neither a local folder nor a Hugging Face id (owner/name); "
            f"fix: point model.name at a folder with config.json, or use a hub id"
        ) from None
    if is_offline_mode():
        raise MachineError(
            f"{where} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; fix: "
            f"download it where there is network (hf download {name}) or set model.name "
            f"to a local folder"
        )
    try:
        HfApi().model_info(name, timeout=timeout)
    except GatedRepoError:
        raise MachineError(
            f"{where} is gated; fix: accept its terms on huggingface.co, then log in (hf auth login, or HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise MachineError(
            f"{where} was not found on the Hugging Face hub (or is private); fix: check the id, "
            f"or log in (hf auth login, or HF_TOKEN) if it is private"
        ) from None
    except Exception as exc:  # DNS, refused connection, timeout, proxy: the hub cannot be reached
        cause = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise MachineError(
            f"{where} cannot be fetched: the Hugging Face hub is out of reach ({cause}); fix: "
            f"download it where there is network and set model.name to the folder, or set "
            f"HF_HUB_OFFLINE=1 with the model in the local cache"
        ) from None
