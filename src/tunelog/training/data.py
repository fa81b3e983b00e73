"""Training text in, token batches out.

Sources: a text file (one sample per non-empty line), JSONL with a text field or a
`messages` list (a chat, rendered through the tokenizer's own chat template), or a
folder saved by `datasets.save_to_disk`. Batches are padded to their own
longest sample, so short corpora don't pay for `max_length`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from ..errors import SpecError
from ..spec import Spec

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


def _records(spec: Spec, path: Path, field: str) -> list[tuple[str, object]]:
    """(where, record) of a JSONL file, or of a `.json` file holding one array of records (alpaca's layout)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(spec.source, [(field, f"{path}:{exc.lineno}: not valid JSON ({exc.msg})")]) from None
        return [(f"{path}[{i}]", record) for i, record in enumerate(data)]
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise SpecError(spec.source, [(field, f"{path}:{number}: not valid JSON ({exc.msg})")]) from None
    return out


def _read_jsonl(spec: Spec, path: Path, field: str) -> list[Sample]:
    texts: list[Sample] = []
    key = spec.data.text_field
    for where, record in _records(spec, path, field):
        if isinstance(record, dict) and key not in record and "messages" in record:
            texts.append(_chat(spec, record["messages"], where, field))
            continue
        if not isinstance(record, dict) or key not in record:
            raise SpecError(
                spec.source, [(field, f"{where}: no field {key!r} and no `messages` (set data.text_field)")]
            )
        texts.append(str(record[key]))
    return texts


def count_samples(spec: Spec, relative: str, field: str) -> int:
    """How many samples a data file holds, whatever their fields: what a script's own format (alpaca's
    instruction/input/output, read by the script and not by tunelog) needs for a plan and an ETA."""
    path = spec.path(relative)
    fmt = _detect_format(path, spec.data.format)
    if fmt == "jsonl":
        return len(_records(spec, path, field))
    return len(read_texts(spec, relative, field))


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
