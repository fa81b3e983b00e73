"""What a reader gives back, and the guarded way every reader opens a run folder's files.

Why one guarded door: an imported tree is someone's disk, not a spec the user wrote. A file
symlinked from elsewhere (`~/.ssh/id_rsa` as `notes.md`), a FIFO, a 2 GB log or a YAML alias bomb
must cost one warning for that folder, never a read outside the tree, a hang or the memory of the
machine. `Folder` lists the regular files under the run folder once (no symlink that leaves the
tree, bounded depth and count); the loaders bound size, nesting and expanded values.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Optional, Protocol

import yaml

from ..util.safe_yaml import expanded_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_CONFIG_BYTES = 1 << 20  # a config or eval file; larger is no hand-written config
MAX_DATA_BYTES = 256 << 20  # a log, trainer_state.json, metrics.csv, an event file
MAX_VALUES = 100_000  # values a config may expand to (aliases copied out)
MAX_DEPTH = 8  # folder levels looked into below a run folder (kohya: logs/RUN_TS/network_train/)
MAX_FILES = 20_000  # files listed per run folder

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # HF Trainer's checkpoints: points of their run, never runs
Point = tuple[str, float, int, Optional[int]]  # metric key, value, step, time in ms (None: unknown)


class ReadError(ValueError):
    """A file of the folder cannot be used; the message names the file and the cause (one warning)."""


@dataclass
class Reading:
    """What one reader found in a run folder. Readers fill what their format holds; `tree` merges."""

    params: dict[str, Any] = field(default_factory=dict)
    identity: set[str] = field(default_factory=set)  # params recorded but never compared (paths, names, seeds)
    series: list[Point] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)  # results (eval files, result dicts): final metrics
    outcome: Optional[tuple[str, str]] = None  # (oom | diverged | failed | incomplete, reason)
    epoch_base: int = 0  # 1 where the layout counts epochs from 0 (Lightning): epoch 0 of 1 is the whole run
    trainer_finished: bool = False  # the trainer's own record reached its end (a trainer_state at max_steps)
    runtime_s: Optional[float] = None  # the run's own `train_runtime`, where its files say it
    warnings: list[str] = field(default_factory=list)  # what was skipped while reading (a line that is not JSON)
    lineage: list[str] = field(default_factory=list)  # paths the run started from (another run's adapter)
    eval_key: Optional[str] = None  # the eval set its results were measured on
    max_step: Optional[int] = None  # the furthest step the run's own records name
    first_ms: Optional[int] = None
    last_ms: Optional[int] = None
    files: list[Path] = field(default_factory=list)  # what was read, for the import key
    note: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    problem: str = ""  # said when the folder yields no metrics at all


NONE, WEAK, RUN = 0, 1, 2  # what a reader's files in a folder say: nothing, maybe a run, a run


class Reader(Protocol):
    """One ecosystem's layout. `detect` looks only at file names; `read` opens files through `folder`.
    `signature` says, from a shallow view, whether the folder is a run (RUN: a trainer_state.json, a
    Lightning version, a kohya log, an events file), might be one (WEAK: a lone config or eval file,
    which is a run only where no run lies below it), or neither (NONE)."""

    name: str

    def detect(self, folder: Folder) -> bool: ...

    def signature(self, folder: Folder) -> int: ...

    def read(self, folder: Folder) -> Reading: ...


class Folder:
    """The regular files under one run folder, listed once, none reached through a symlink that leaves
    the imported tree; readers open files only through `text`, `data` and `bytes`."""

    def __init__(self, path: Path, root: Path, shallow: bool = False, inner: tuple[Path, ...] = ()):
        """`shallow`: only the folder's own files and its `checkpoint-N/` folders' (what says whether
        the folder is a run); else everything below it, to `MAX_DEPTH` levels (what a run's readers read),
        but for `inner`: the folders of other runs inside this one, read as runs of their own."""
        self.path = path
        self._inner = set(inner)
        self.shallow = shallow
        self.name = path.name
        self._root = root.resolve()
        self.files: dict[str, Path] = {}  # posix path relative to the folder -> the file
        self.refused: list[str] = []  # relative paths not read, with why
        self.claimed: set[str] = set()  # files a reader has taken (the generic reader leaves them)
        self._list()

    def _list(self) -> None:
        base = len(self.path.parts)
        for dirpath, dirnames, filenames in os.walk(self.path, followlinks=False):
            here = Path(dirpath)
            if len(here.parts) - base >= MAX_DEPTH:
                dirnames[:] = []
            if self.shallow:
                dirnames[:] = [d for d in dirnames if here == self.path and CHECKPOINT.match(d)]
            dirnames[:] = [d for d in dirnames if here / d not in self._inner]
            dirnames.sort()
            for name in sorted(filenames):
                if len(self.files) >= MAX_FILES:
                    self.refused.append(f"{here.relative_to(self.path)}: more than {MAX_FILES:,} files, rest not read")
                    return
                file = here / name
                rel = file.relative_to(self.path).as_posix()
                if file.is_symlink() and not self._inside(file):
                    self.refused.append(f"{rel}: a symlink to outside the imported tree, not read")
                    continue
                try:
                    if not stat.S_ISREG(file.stat().st_mode):
                        continue  # a FIFO or device would block or never end
                except OSError:
                    continue  # a dangling link
                self.files[rel] = file

    def _inside(self, file: Path) -> bool:
        try:
            file.resolve().relative_to(self._root)
        except (ValueError, OSError, RuntimeError):
            return False
        return True

    def top(self, *names: str) -> Optional[str]:
        """The first of these names directly in the folder."""
        return next((n for n in names if n in self.files), None)

    def glob(self, pattern: str) -> list[str]:
        """Relative paths whose file name (or whole relative path, for a pattern with `/`) matches."""
        if "/" in pattern:
            return [rel for rel in self.files if fnmatchcase(rel, pattern)]
        return [rel for rel in self.files if fnmatchcase(rel.rsplit("/", 1)[-1], pattern)]

    def size(self, rel: str) -> int:
        return self.files[rel].stat().st_size

    def bytes(self, rel: str, limit: int = MAX_DATA_BYTES) -> bytes:
        size = self.size(rel)
        if size > limit:
            raise ReadError(f"{rel}: {size:,} bytes, more than the {limit:,} read")
        self.claimed.add(rel)
        return self.files[rel].read_bytes()

    def text(self, rel: str, limit: int = MAX_DATA_BYTES) -> str:
        try:
            return self.bytes(rel, limit).decode("utf-8")
        except UnicodeDecodeError:
            raise ReadError(f"{rel} is not text") from None

    def data(self, rel: str) -> Any:
        """A JSON, YAML or TOML file as data, by its suffix (size, nesting and aliases bounded)."""
        return load_structured(self.text(rel, MAX_CONFIG_BYTES if not rel.endswith(".json") else MAX_DATA_BYTES), rel)


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads unknown tags (`!!python/object:argparse.Namespace` in a Lightning
    hparams.yaml) as plain data instead of refusing the file; nothing is ever constructed."""


def _plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_Loader.add_multi_constructor("", _plain)


def load_structured(text: str, name: str) -> Any:
    """JSON, YAML or TOML text as data; anything unreasonable is one ReadError naming the file."""
    try:
        if name.endswith(".json"):
            data = json.loads(text)
        elif name.endswith(".toml"):
            data = tomllib.loads(text)
        else:
            data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise ReadError(f"{name}: nested too deeply to be a config") from None
    except (ValueError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ReadError(f"{name}: {exc}".replace("\n", " ")[:300]) from None
    if expanded_size(data, MAX_VALUES) > MAX_VALUES:
        raise ReadError(f"{name}: expands to more than {MAX_VALUES:,} values (YAML aliases?), not read")
    return data


def flat(data: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dicts to one level (`a.b`), without recursion (a deep config must not overflow the stack)."""
    out: dict[str, Any] = {}
    stack = [(prefix, data)]
    while stack:
        path, node = stack.pop()
        for key, value in node.items():
            name = f"{path}{key}"
            if isinstance(value, dict) and value:
                stack.append((name + sep, value))
            else:
                out[name] = value
    return dict(sorted(out.items()))


def scalar(text: str) -> Any:
    """A value written as text (a model card's `- seed: 42`, an override's `5e-3`): an int, else a float, else the
    text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def number(value: Any) -> Optional[float]:
    """A metric value: ints and floats (NaN kept), never a bool or a numeric-looking string."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
