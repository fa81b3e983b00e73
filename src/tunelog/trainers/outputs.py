"""What a command trainer keeps of its script's output folder, and what that folder says ran.

- The adapter: the run's final one, never an earlier checkpoint's. A Trainer saves the final adapter at the
  folder's root (`adapter_model.safetensors` + `adapter_config.json`, the tokenizer beside it) and earlier
  ones in `checkpoint-N/`; where the root has none (a run cut short), the newest checkpoint's. Copied flat,
  every `*.safetensors` would have let the last one copied win.
- The record: the trainer's small files (`trainer_state.json`, `trainer_log.jsonl`, results, the model card,
  its plots), kept under `record/` so the run keeps what its numbers came from.
- What ran: the record's params (`records.read_record`), a LLaMA-Factory config named on the command line
  with its `key=value` overrides, then the spec's values the argv passed; never a spec default the script
  was not given where the record says otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from ..records import RECORD_FILES, Reading
from ..records.base import CHECKPOINT, ReadError, load_structured, scalar
from ..records.llamafactory import config_params
from ..spec import Spec
from ..spec.argv import PLACEHOLDER

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# what loads with an adapter: its config and the tokenizer the Trainer saved beside it
ADAPTER_COMPANIONS = (
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "added_tokens.json",
)
RECORD_ARTIFACT = "record"
_LLAMAFACTORY = re.compile(r"(?:^|[/\\])(?:llamafactory-cli|lmf)$|llamafactory")


def adapter_home(output_dir: Path) -> Optional[Path]:
    """The folder holding the run's final adapter: the root's, else the newest `checkpoint-N/` that has one."""
    if any((output_dir / name).is_file() for name in ADAPTER_WEIGHTS):
        return output_dir
    steps = []
    for path in output_dir.iterdir() if output_dir.is_dir() else []:
        found = CHECKPOINT.match(path.name)
        if found and path.is_dir() and any((path / name).is_file() for name in ADAPTER_WEIGHTS):
            steps.append((int(found.group(1)), path))
    return max(steps)[1] if steps else None


def in_other_checkpoint(path: Path, output_dir: Path, home: Optional[Path]) -> bool:
    """A file inside a `checkpoint-N/` that is not the final adapter's folder: an earlier state, never kept."""
    parts = path.relative_to(output_dir).parts[:-1]
    for depth, part in enumerate(parts):
        if CHECKPOINT.match(part):
            return output_dir.joinpath(*parts[: depth + 1]) != home
    return False


def record_files(output_dir: Path) -> list[Path]:
    """The trainer's small record files at the folder's root (the newest checkpoint's state for a cut run)."""
    found = [p for pattern in RECORD_FILES for p in sorted(output_dir.glob(pattern)) if p.is_file()]
    if not (output_dir / "trainer_state.json").is_file():
        home = adapter_home(output_dir)
        if home is not None and (home / "trainer_state.json").is_file():
            found.append(home / "trainer_state.json")
    return found


def config_on_command_line(argv: list[str], cwd: Path) -> tuple[Optional[Path], dict[str, Any]]:
    """A LLaMA-Factory run's YAML (the first `.yaml`/`.yml`/`.json` argument that is a file) with the
    `key=value` overrides after it applied, as LLaMA-Factory reads them; (None, {}) for any other command."""
    if not argv or not any(_LLAMAFACTORY.search(item) for item in argv[:3]):
        return None, {}
    config_file = next((cwd / a for a in argv if a.endswith((".yaml", ".yml", ".json")) and (cwd / a).is_file()), None)
    if config_file is None:
        return None, {}
    try:
        config = load_structured(config_file.read_text(encoding="utf-8"), config_file.name)
    except (ReadError, OSError, UnicodeDecodeError):
        return config_file, {}
    if not isinstance(config, dict):
        return config_file, {}
    at = next(i for i, a in enumerate(argv) if cwd / a == config_file)
    for item in argv[at + 1 :]:
        key, sep, value = item.partition("=")
        if sep and key and not key.startswith("-"):
            config[key] = _scalar(value)
    return config_file, config


def _scalar(text: str) -> Any:
    """An override's value as OmegaConf reads it: `5e-3` is a number (plain YAML would keep it a string),
    `[a, b]` a list."""
    value = scalar(text)
    if not isinstance(value, str) or not text:
        return value
    try:
        return load_structured(text, "override.yaml")
    except ReadError:
        return text


def what_ran(spec: Spec, config: dict[str, Any], record: Reading, decided: dict[str, Any]) -> dict[str, Any]:
    """The params of a run whose script decides its own settings: the record's, then the command line's
    LLaMA-Factory `config`, then the spec's `decided` values. Where a record or config says anything, a spec
    value the argv never passed is left out: the script did not use it, and it would read as what ran."""
    from_config = config_params(config)[0] if config else {}
    if not record.params and not from_config:
        return {**decided}
    passed = {name for item in spec.trainer.argv for name in PLACEHOLDER.findall(item)}
    told = {k: v for k, v in decided.items() if k in passed}
    return {**told, **from_config, **record.params}


def identity_of(config: dict[str, Any], record: Reading) -> set[str]:
    """The params that name the run or where it wrote (recorded, never a change): the record's and `config`'s."""
    return set(record.identity) | (config_params(config)[1] if config else set())
