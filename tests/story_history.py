"""TEST DATA: a speech-decoder history in two name families, written as legacy folders (args.json +
train.log) for `tunelog import`. Each run logs two candidate headlines, `per_greedy` and `per_beam`
(phone error rate, lower is better). Built to trip a naive changelog:

- gru_ctc_reg1..5 (day 1): reg3's log stops at batch 3000 of nBatch 12000 (incomplete); reg4 changes
  the scheduler, its warmup and reg together (one change set); reg5 changes lr alone.
- run16_* (day 3, after a pause): run16_2 repeats run16_greedy's config but scores 335% worse and its
  log says `WARNING loss is nan at batch 12000` in words (no parsed value is NaN); run16_3 changes one
  key and is as close to the fluke as to its sane twin; run16_lr changes lr alone, as reg5 did.
"""

import json
from datetime import datetime, timedelta

BASE = {
    "decoder": "gru",
    "nBatch": 12000,
    "lr": 0.001,
    "scheduler": "linear",
    "warmup_steps": 0,
    "reg": 0.0,
    "dropout": 0.1,
    "beam": 4,
}
DAY1 = datetime(2025, 5, 6, 9, 0, 0)
DAY3 = DAY1 + timedelta(days=2)
COSINE = {"scheduler": "warmup_cosine", "warmup_steps": 1000, "reg": 0.1}

# name, config overrides, per_greedy, per_beam, start, last batch logged, log words
HISTORY = [
    ("gru_ctc_reg1", {}, 0.300, 0.290, DAY1, 12000, ""),
    ("gru_ctc_reg2", {"reg": 0.05}, 0.290, 0.281, DAY1 + timedelta(hours=1), 12000, ""),
    ("gru_ctc_reg3", {"reg": 0.2}, 0.330, 0.320, DAY1 + timedelta(hours=2), 3000, ""),
    ("gru_ctc_reg4", {**COSINE}, 0.260, 0.251, DAY1 + timedelta(hours=3), 12000, ""),
    ("gru_ctc_reg5", {"reg": 0.05, "lr": 0.002}, 0.280, 0.272, DAY1 + timedelta(hours=4), 12000, ""),
    ("run16_greedy", {**COSINE, "decoder": "gru16"}, 0.200, 0.192, DAY3, 12000, ""),
    (
        "run16_2",
        {**COSINE, "decoder": "gru16"},
        0.870,
        0.860,
        DAY3 + timedelta(hours=1),
        12000,
        "WARNING loss is nan at batch 12000",
    ),
    ("run16_3", {**COSINE, "decoder": "gru16", "dropout": 0.2}, 0.199, 0.190, DAY3 + timedelta(hours=2), 12000, ""),
    (
        "run16_lr",
        {**COSINE, "decoder": "gru16", "dropout": 0.2, "lr": 0.002},
        0.185,
        0.180,
        DAY3 + timedelta(hours=3),
        12000,
        "",
    ),
]


def _log(start: datetime, greedy: float, beam: float, last_batch: int, words: str) -> str:
    lines = []
    batches = [b for b in (1000, 3000, 6000, 9000, 12000) if b <= last_batch]
    for i, batch in enumerate(batches, start=1):
        ts = start + timedelta(minutes=8 * i)
        share = batch / 12000
        lines.append(f"{ts:%Y-%m-%d %H:%M:%S} INFO batch {batch}, loss: {1.0 - 0.5 * share:.3f}")
        g, b = greedy + 0.1 * (1 - share), beam + 0.1 * (1 - share)
        lines.append(f"{ts:%Y-%m-%d %H:%M:%S} INFO batch {batch}, per_greedy: {g:.3f}, per_beam: {b:.3f}")
    if words:
        lines.append(f"{start + timedelta(minutes=41):%Y-%m-%d %H:%M:%S} {words}")
    return "\n".join(lines) + "\n"


def build_tree(root):
    for name, overrides, greedy, beam, start, last, words in HISTORY:
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "args.json").write_text(json.dumps({**BASE, **overrides}))
        (folder / "train.log").write_text(_log(start, greedy, beam, last, words))
    return root
