"""Training text in, token batches out.

Sources: a text file (one sample per non-empty line), JSONL with a text field or a
`messages` list (a chat, rendered through the tokenizer's own chat template), or a
folder saved by `datasets.save_to_disk`. Batches are padded to their own
longest sample, so short corpora don't pay for `max_length`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from .errors import SpecError
from .spec import Spec

if TYPE_CHECKING:  # torch is imported where batches are built, so `lint` stays light
    import torch

Chat = list[dict[str, str]]  # [{"role": "user", "content": "..."}, {"role": "assistant", ...}]
Sample = Union[str, Chat]


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "datasets"
    return "jsonl" if path.suffix in (".jsonl", ".json") else "text"


def eval_key(spec: Spec) -> str | None:
    """A short hash of the eval set's bytes: what the headline was measured on.

    Why: a run scored on a dialect set and one scored on the general set are not better or worse
    than each other, only different; the changelog and promote compare only runs with equal keys.
    None without `data.eval` (or when it cannot be read: the run's own preflight says so)."""
    if not spec.data.eval:
        return None
    path = spec.path(spec.data.eval)
    if path.is_file():  # the manifest's hash of the same file, computed once
        return file_sha256(path)[:12]
    if not path.is_dir():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    try:
        for file in files:
            digest.update(file.relative_to(path).as_posix().encode())
            digest.update(file.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()[:12]


@lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """A file's sha256, read in blocks and remembered per (path, size, mtime) for this process: a sweep's
    trials all record the same data files, and a training set may be gigabytes."""
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def manifest(spec: Spec) -> dict[str, dict]:
    """The data files a run read, by spec field: where they were, their size and a hash. Logged with the
    run (`data_manifest.json`), so that on another machine `reproduce` can say which are missing and
    whether the files it finds are the same."""
    fields = {"data.train": spec.data.train, "data.eval": spec.data.eval}
    fields.update({f"data.extra_eval.{k}": v for k, v in spec.data.extra_eval.items()})
    out = {}
    for field, value in fields.items():
        if not value:
            continue
        path = spec.path(value)
        entry: dict = {"path": str(path), "as_written": str(value)}
        if path.is_file():
            entry.update(bytes=path.stat().st_size, sha256=file_sha256(path))
        out[field] = entry
    return out


def dataset_inputs(spec: Spec) -> list[tuple[str, str, Optional[str]]]:
    """(context, path as written, digest) of the train, eval and extra eval sets: the run's MLflow dataset
    inputs. The eval set's digest is the run's eval key, the one the changelog and promote compare."""
    out: list[tuple[str, str, Optional[str]]] = []
    for context, value in (("train", spec.data.train), ("eval", spec.data.eval), *spec.data.extra_eval.items()):
        if not value:
            continue
        path = spec.path(value)
        if context == "eval":
            digest = eval_key(spec)
        else:
            digest = file_sha256(path)[:12] if path.is_file() else None
        out.append((context if context in ("train", "eval") else f"eval/{context}", str(value), digest))
    return out


def relocated(spec: Spec, recorded: dict[str, dict]) -> dict[str, str]:
    """Overrides for data fields whose logged path (relative to the project root) is not found from this
    folder while the absolute path the run recorded still holds the file: the same machine, started from
    another folder. Another machine's checkout finds the relative paths from its own root."""
    flat = spec.flat_params()
    moves = {}
    for field, entry in recorded.items():
        value = flat.get(field)
        if value in (None, "None") or spec.path(str(value)).exists():
            continue
        if Path(entry["path"]).is_file():
            moves[field] = entry["path"]
    return moves


def missing_data(spec: Spec, recorded: dict[str, dict]) -> list[str]:
    """One line per data file of `recorded` that this machine lacks or holds in another version (and the
    tokenizer file, when the spec names one that is not here)."""
    lines = []
    if spec.model.tokenizer and not spec.path(spec.model.tokenizer).exists():
        lines.append(f"model.tokenizer: {spec.path(spec.model.tokenizer)} not found")
    for field, entry in recorded.items():
        value = spec.flat_params().get(field)
        path = spec.path(str(value)) if value not in (None, "None") else Path(entry["path"])
        if not path.exists():
            digest = f", sha256 {entry['sha256'][:12]}" if entry.get("sha256") else ""
            lines.append(f"{field}: {path} not found (the run read {entry.get('bytes', '?')} bytes{digest})")
        elif entry.get("sha256") and path.is_file():
            if file_sha256(path) != entry["sha256"]:
                lines.append(f"{field}: {path} differs from the file the run read (sha256 {entry['sha256'][:12]})")
    return lines


def read_texts(spec: Spec, relative: str, field: str) -> list[Sample]:
    """The samples of one data file: strings, or chats (JSONL `messages`); errors name the spec field."""
    path = spec.path(relative)
    fmt = _detect_format(path, spec.data.format)
    if fmt == "text":
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif fmt == "jsonl":
        texts = _read_jsonl(spec, path, field)
    else:
        texts = _read_datasets_folder(spec, path, field)
    if not texts:
        raise SpecError(spec.source, [(field, f"no samples in {path}")])
    return texts


def _read_jsonl(spec: Spec, path: Path, field: str) -> list[Sample]:
    texts: list[Sample] = []
    key = spec.data.text_field
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecError(spec.source, [(field, f"{path}:{number}: not valid JSON ({exc.msg})")]) from None
        if isinstance(record, dict) and key not in record and "messages" in record:
            texts.append(_chat(spec, record["messages"], f"{path}:{number}", field))
            continue
        if not isinstance(record, dict) or key not in record:
            raise SpecError(
                spec.source, [(field, f"{path}:{number}: no field {key!r} and no `messages` (set data.text_field)")]
            )
        texts.append(str(record[key]))
    return texts


def _chat(spec: Spec, messages: object, where: str, field: str) -> Chat:
    """A `messages` list as role/content strings; anything else names the line and what is accepted."""
    ok = (
        isinstance(messages, list)
        and messages
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    )
    if not ok:
        raise SpecError(
            spec.source, [(field, f"{where}: `messages` must be a non-empty list of {{role, content}} strings")]
        )
    return [{"role": m["role"], "content": m["content"]} for m in messages]  # type: ignore[union-attr]


def render(samples: list[Sample], tokenizer) -> list[str]:
    """Chats through the tokenizer's chat template (the format the model was tuned on), strings as they are."""
    if all(isinstance(s, str) for s in samples):
        return samples  # type: ignore[return-value]
    if not getattr(tokenizer, "chat_template", None):
        raise SpecError(
            "data", [("data.train / data.eval", "chat samples (`messages`) need a tokenizer with a chat template")]
        )
    return [s if isinstance(s, str) else tokenizer.apply_chat_template(s, tokenize=False) for s in samples]


def _read_datasets_folder(spec: Spec, path: Path, field: str) -> list[str]:
    try:
        import datasets  # optional: only needed for folders saved by `datasets`
    except ImportError:
        raise SpecError(
            spec.source, [(field, f"{path} is a folder; reading it needs `pip install datasets`")]
        ) from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    if spec.data.text_field not in ds.column_names:
        raise SpecError(
            spec.source, [(field, f"no column {spec.data.text_field!r} in {path}; columns: {ds.column_names}")]
        )
    return [str(t) for t in ds[spec.data.text_field]]


@dataclass
class TokenizedData:
    """Token id lists; kept unpadded so each batch pads only to its own longest sample."""

    samples: list[list[int]]
    pad_id: int

    def __len__(self) -> int:
        return len(self.samples)

    def collate(self, indices: list[int]) -> dict[str, "torch.Tensor"]:
        """Right-padded input ids, attention mask and labels with padding ignored (-100)."""
        import torch

        rows = [self.samples[i] for i in indices]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def batches(self, batch_size: int, generator: "torch.Generator | None") -> Iterator[list[int]]:
        """Index lists for one epoch: shuffled with `generator`, in order when it is None."""
        import torch

        order = torch.randperm(len(self), generator=generator).tolist() if generator else list(range(len(self)))
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]


def tokenize(texts: list[Sample], tokenizer, max_length: int) -> TokenizedData:
    """Token ids per sample: text with the tokenizer's special tokens, a rendered chat with the ones its
    template wrote (adding them again would start every chat with two BOS tokens)."""
    rendered = render(texts, tokenizer)
    encoded: list[list[int]] = [[] for _ in texts]
    for special in (True, False):
        picked = [i for i, t in enumerate(texts) if isinstance(t, str) == special]
        if picked:
            ids = tokenizer(
                [rendered[i] for i in picked], truncation=True, max_length=max_length, add_special_tokens=special
            )
            for i, row in zip(picked, ids["input_ids"]):
                encoded[i] = row
    samples = [ids for ids in encoded if len(ids) > 1]  # a one-token sample has nothing to predict
    return TokenizedData(samples=samples, pad_id=tokenizer.pad_token_id)
