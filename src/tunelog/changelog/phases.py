"""Which section of the story a run belongs to: its phase.

People rarely tag phases; they name runs in families (`gru_ctc_reg1..7`, `run16_greedy`,
`run16_2`) and work in bursts. So a run's group is, first that found: a `--phases FILE`
pattern, its `tunelog.phase` tag, its container (a sweep, pipeline or probe), else its
name family among consecutive runs, split where the history pauses for more than `GAP_H`.
Runs of no family (or all of one family: `sdxl_v01..30` says nothing) are grouped by what they
changed: a phase lasts while each run changes keys within the phase's topic (the keys of its first
change), and is titled by its most common change (`Phase: rank + alpha`, `Phase: optimizer`), as a
person titles the sections of a hand-written changelog.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Optional

from .. import tracking as t
from ..errors import SpecError
from ..tracking import RunRecord
from ..util.safe_yaml import read_yaml

GAP_H = 12.0  # a pause this long (hours) between two runs starts a new phase
CHANGE_PHASES_FROM = 6  # a stretch of fewer loose runs stays one section: a short history needs no phases
CONTAINERS = (t.KIND_SWEEP, t.KIND_PIPELINE, t.KIND_PROBE, t.KIND_GROUP)
_TRAILING_NUMBER = re.compile(r"^(.*?)[_\-.]?\d+$")
ChangedKeys = Callable[[RunRecord], frozenset]  # the config keys a run changed from its parent
# what a change is called in a title, by the key's last dotted part (others by their own name)
TOPICS = {
    "rank": ("network_dim", "r", "lora_r", "rank", "lora_rank"),
    "alpha": ("network_alpha", "alpha", "lora_alpha"),
    "optimizer": ("optimizer", "optimizer_type", "optimizer_args", "optim"),
    "learning rate": ("learning_rate", "lr", "unet_lr", "text_encoder_lr", "peak_lr"),
    "LR schedule": ("lr_scheduler", "scheduler", "schedule", "lr_scheduler_num_cycles", "lr_warmup_steps"),
    "warmup": ("warmup", "warmup_steps", "warmup_ratio"),
    "resolution": ("resolution",),
    "bucketing": ("enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale"),
    "batch size": ("batch_size", "train_batch_size", "per_device_train_batch_size", "grad_accum"),
    "training length": ("max_train_steps", "max_train_epochs", "max_steps", "epochs", "num_train_epochs"),
    "dropout": ("dropout", "network_dropout", "lora_dropout", "rank_dropout", "module_dropout"),
    "precision": ("mixed_precision", "full_bf16", "full_fp16", "precision", "bf16", "fp16"),
    "target modules": ("target_modules", "network_module"),
}
_TOPIC_OF = {key: topic for topic, keys in TOPICS.items() for key in keys}


def read_phases(path: str | Path) -> dict[str, list[str]]:
    """`phase name: [run-name pattern, ...]` (or one pattern), optionally under a `phases:` key."""
    raw = read_yaml(path)
    raw = raw.get("phases", raw) if isinstance(raw.get("phases"), dict) else raw
    phases: dict[str, list[str]] = {}
    for name, patterns in raw.items():
        patterns = [patterns] if isinstance(patterns, str) else patterns
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise SpecError(str(path), [(str(name), "accepted: a run-name pattern or a list of them (run16_*)")])
        phases[str(name)] = patterns
    return phases


def family(name: str) -> Optional[str]:
    """`gru_ctc_reg3` -> `gru_ctc_reg`, `run16_2` / `run16_greedy` -> `run16`; None for a name
    with no family part (`01_baseline` -> `01`, only digits, is no family)."""
    match = _TRAILING_NUMBER.match(name)
    stem = match.group(1) if match else (name.rsplit("_", 1)[0] if "_" in name else name)
    stem = stem.rstrip("_-.")
    return stem if stem and not stem.isdigit() else None


def folder_of(name: str) -> Optional[str]:
    """An imported run named by its path (`project/ResultsEtape4/FocalLoss`) belongs to its folder
    (`project/ResultsEtape4/`, a trailing `/` telling it from a name family): the folder a person made
    for that stage of the work."""
    return name.rsplit("/", 1)[0] + "/" if "/" in name else None


def assign(
    runs: list[RunRecord],
    named: Optional[dict[str, list[str]]] = None,
    changed: Optional[ChangedKeys] = None,
) -> dict[str, str]:
    """run id -> its group's title (`Phase: run16*`, `Sweep: demo-sweep`, `Phase: rank`, `Runs`), runs in
    start order."""
    by_id = {r.run_id: r for r in runs}
    groups: dict[str, str] = {}
    loose: list[RunRecord] = []
    for run in runs:
        title = _named(run, named or {}) or _tagged(run) or _contained(run, by_id)
        if title:
            groups[run.run_id] = title
        elif run.kind not in CONTAINERS:
            loose.append(run)
        else:
            groups[run.run_id] = f"{run.kind.capitalize()}: {run.tags.get(t.TAG_NAME) or run.name}"
    groups.update(_inferred(loose, changed))
    return groups


def _named(run: RunRecord, named: dict[str, list[str]]) -> Optional[str]:
    name = run.tags.get(t.TAG_NAME) or run.name
    return next((f"Phase: {p}" for p, pats in named.items() if any(fnmatchcase(name, x) for x in pats)), None)


def _tagged(run: RunRecord) -> Optional[str]:
    return f"Phase: {run.tags[t.TAG_PHASE]}" if run.tags.get(t.TAG_PHASE) else None


def _contained(run: RunRecord, by_id: dict[str, RunRecord]) -> Optional[str]:
    container = by_id.get(run.tags.get(t.TAG_PARENT, ""))
    if container is None or container.kind not in CONTAINERS:
        return None
    return f"{container.kind.capitalize()}: {container.tags.get(t.TAG_NAME) or container.name}"


def _inferred(runs: list[RunRecord], changed: Optional[ChangedKeys] = None) -> dict[str, str]:
    """Consecutive runs of one name family form a phase; runs of no family (or of a family seen
    once, or of the one family every run shares) are grouped by what they changed, split at long pauses."""
    names = [r.tags.get(t.TAG_NAME) or r.name for r in runs]
    families = [folder_of(n) or family(n) for n in names]
    seen = Counter(families)
    keys = [f if f and 1 < seen[f] < len(runs) else None for f in families]
    segments: list[tuple[Optional[str], list[RunRecord]]] = []
    previous_end = None
    for run, key in zip(runs, keys):
        paused = previous_end is not None and run.start_ms - previous_end > GAP_H * 3600_000
        if not segments or segments[-1][0] != key or paused:
            segments.append((key, []))
        segments[-1][1].append(run)
        previous_end = max(previous_end or 0, run.end_ms or run.start_ms)
    titled: list[tuple[str, list[RunRecord]]] = []
    for key, members in segments:
        if key is not None:
            titled.append((f"Phase: {key}" if key.endswith("/") else f"Phase: {key}*", members))
        else:
            enough = changed is not None and len(members) >= CHANGE_PHASES_FROM
            titled += _by_change(members, changed) if enough else [("", members)]
    anonymous = sum(1 for title, _ in titled if not title)
    out, n, used = {}, 0, Counter()
    for title, members in titled:
        if not title:
            n += 1
            title = "Runs" if anonymous == 1 else f"Runs, part {n}"
        used[title] += 1
        title = title if used[title] == 1 else f"{title} ({used[title]})"
        out.update({r.run_id: title for r in members})
    return out


def _by_change(runs: list[RunRecord], changed: ChangedKeys) -> list[tuple[str, list[RunRecord]]]:
    """Consecutive runs while each changes only keys of the phase's topic (the first change's keys; a
    repeat or a run without a parent stays); a key outside it starts the next phase, unless that phase
    would be one run. '' titles a stretch that changed nothing."""
    phases: list[tuple[Optional[frozenset], list[RunRecord], list[frozenset]]] = []
    for run in runs:
        keys = changed(run)
        if phases and (not keys or phases[-1][0] is None or keys <= phases[-1][0]):
            topic, members, changes = phases[-1]
            phases[-1] = (topic or keys or None, members + [run], changes + ([keys] if keys else []))
        else:
            phases.append((keys or None, [run], [keys] if keys else []))
    merged: list[tuple[list[RunRecord], list[frozenset]]] = []
    for _, members, changes in phases:  # a one-run detour stays in the phase it interrupted
        if merged and (len(members) == 1 or len(merged[-1][0]) == 1):
            merged[-1] = (merged[-1][0] + members, merged[-1][1] + changes)
        else:
            merged.append((members, changes))
    return [(_title(changes), members) for members, changes in merged]


def _title(changes: list[frozenset]) -> str:
    """`Phase: rank + alpha`: the phase's most common change set (the first of equals), in words."""
    if not changes:
        return ""
    top = Counter(changes).most_common(1)[0][0]
    words = dict.fromkeys(_topic(k) or k for k in sorted(top, key=_topic_order))
    return "Phase: " + " + ".join(words)


def _topic(key: str) -> Optional[str]:
    """What a key's change is called in a title, by its last dotted part (`lora.r` -> rank), or None."""
    return _TOPIC_OF.get(key.rsplit(".", 1)[-1].lower())


def _topic_order(key: str) -> tuple[int, str]:
    topic = _topic(key)
    return (list(TOPICS).index(topic) if topic else len(TOPICS), key)
