"""Log parsing speed: lines per second through `LogParser.parse` on a mixed training log (tqdm
progress lines with loss=, key=value lines, Hugging Face dict lines, and plain text), next to a
plain baseline that only runs one key=value regex over the same lines. Target: 200,000 lines/s.

The ratio to the plain regex is printed too: the absolute rate moves with the machine (on a shared
2-core box the plain regex alone ranges 150,000-210,000 lines/s between runs). The log's lines come
in a few shapes, as a training log's do (tunelog parses each shape once, see `logparse`).
"""

from __future__ import annotations

import re
import time

from _common import sized, verdict

N = sized(200_000, 5_000)


def make_lines(n: int) -> list[str]:
    styles = [
        "steps:  40%|####      | {i}/1000 [00:10<00:15, 4.2it/s, loss=0.{i:04d}]",
        "2024-03-01 10:00:00 step={i} loss=1.{i:04d} lr=0.0001 grad_norm=0.5",
        "{{'loss': 0.{i:04d}, 'learning_rate': 2e-05, 'epoch': 0.3}}",
        "loading shard {i} of the dataset from /data/shards",
        "batch {i}, loss: 2.{i:04d}",
    ]
    return [styles[i % len(styles)].format(i=i % 10_000) for i in range(n)]


def main() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from tunelog.logs.parse import LogParser

    lines = make_lines(N)
    pair = re.compile(r"([A-Za-z_][\w./\-]*)\s*[=:]\s*([-+]?\d+\.?\d*(?:[eE][-+]?\d+)?)")
    start = time.perf_counter()
    found = sum(len(pair.findall(line)) for line in lines)
    plain = N / (time.perf_counter() - start)
    start = time.perf_counter()
    log = LogParser().parse(lines)
    ours = N / (time.perf_counter() - start)
    print(
        f"{N} lines: plain key=value regex {plain:,.0f} lines/s ({found} pairs); "
        f"tunelog LogParser {ours:,.0f} lines/s ({len(log.series)} metric points, {log.metric_lines} metric lines)"
    )
    print(f"ratio tunelog / plain regex: {ours / plain:.2f}")
    print(verdict("log_parsing_lines_per_s", ours, ">=", 200_000))


if __name__ == "__main__":
    main()
