"""probe: a worst-case batch, OOM survived under a CPU memory budget, skips that say why, a script that runs."""

import json
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from conftest import REPO, demo_raw, subprocess_env, write_spec
from tunelog.probe import Measurement, Probe, at_least_as_large, grid, values_of
from tunelog.spec import ParamSpec, load_spec
from tunelog.tracking import Tracker


def probe_raw(**train):
    raw = demo_raw(max_steps=4, eval_every=None, **train)
    raw["probe"] = {
        "params": {
            "train.batch_size": {"type": "categorical", "choices": [2, 8, 64, 512]},
            "lora.r": {"type": "categorical", "choices": [4, 16]},
            "train.grad_accum": {"type": "categorical", "choices": [1, 2]},
        },
        "max_steps": 6,
        "headroom": 0.0,
    }
    return raw


def test_grid_and_values():
    assert values_of(ParamSpec(type="int", min=2, max=8, step=3)) == [2, 5, 8]
    assert (
        len(
            grid(
                {
                    "a": ParamSpec(type="categorical", choices=[1, 2]),
                    "b": ParamSpec(type="categorical", choices=[True, False]),
                }
            )
        )
        == 4
    )


def test_dominance_follows_memory_direction():
    oom = {"train.batch_size": 32, "lora.r": 8, "model.gradient_checkpointing": True}
    assert at_least_as_large({"train.batch_size": 64, "lora.r": 8, "model.gradient_checkpointing": False}, oom)
    assert not at_least_as_large({"train.batch_size": 64, "lora.r": 4, "model.gradient_checkpointing": True}, oom)


def test_skip_reasons_name_the_cause(tmp_path, store):
    raw = probe_raw()
    raw["probe"]["headroom"] = 0.1
    probe = Probe(load_spec(write_spec(tmp_path / "p.yaml", raw)), Tracker(), max_memory_gb=1.0, echo=lambda s: None)
    done = [
        Measurement({"train.batch_size": 2, "lora.r": 4}, "ok", peak_gb=0.5),
        Measurement({"train.batch_size": 5, "lora.r": 4}, "ok", peak_gb=0.55),
        Measurement({"train.batch_size": 8, "lora.r": 4}, "ok", peak_gb=0.6),
        Measurement({"train.batch_size": 32, "lora.r": 16}, "oom", peak_gb=1.1),
    ]
    assert "which ran out of memory" in probe.skip_reason({"train.batch_size": 128, "lora.r": 16}, done)
    # a line through (2, 0.5), (5, 0.55) and (8, 0.6) predicts 2.6 GB at batch 128, over 0.9 GB (1.0 less 10%)
    why = probe.skip_reason({"train.batch_size": 128, "lora.r": 4}, done)
    assert "predicted peak 2.600 GB" in why and "over 0.900 GB" in why
    assert probe.skip_reason({"train.batch_size": 16, "lora.r": 4}, done) == ""


@pytest.mark.slow
def test_probe_survives_oom_and_writes_a_script_that_runs(tmp_path, store):
    """Load-proof: two batch sizes far apart in memory, so a budget between them holds however busy the
    machine is, and the walk always reaches the large one (a throughput fall is judged only after it ran)."""
    raw = probe_raw()
    raw["probe"]["params"] = {
        "train.batch_size": {"type": "categorical", "choices": [2, 256]},
        "lora.r": {"type": "categorical", "choices": [4]},
    }
    path = write_spec(tmp_path / "p.yaml", raw)
    env = subprocess_env(store)
    roomy = subprocess.run(
        [sys.executable, "-m", "tunelog.cli", "probe", str(path), "-o", str(tmp_path / "r.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert roomy.returncode == 0, roomy.stderr[-2000:]
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("test").experiment_id
    first = [
        r for r in client.search_runs([exp], "tags.`tunelog.kind` = 'probe'") if "mlflow.parentRunId" not in r.data.tags
    ]
    measured = json.loads(
        open(client.download_artifacts(first[0].info.run_id, "probe_summary.json", str(tmp_path / "roomy"))).read()
    )["measured"]
    peak = {m["config"]["train.batch_size"]: m["peak_mem_gb"] for m in measured}
    assert set(peak) == {2, 256} and peak[256] > peak[2]  # with no budget, both were measured
    budget = peak[2] + 0.3 * (peak[256] - peak[2])  # batch 256 (same process shape, same command) goes over it
    # the budgeted probe as users start it: `mlflow run . -e probe` (the entry point's process is a CLI's twin)
    proc = subprocess.run(
        [
            "mlflow",
            "run",
            str(REPO),
            "-e",
            "probe",
            "--env-manager",
            "local",
            "--experiment-name",
            "test",
            "-P",
            f"spec={path}",
            "-P",
            f"max_memory_gb={budget:.4f}",
            "-P",
            f"output={tmp_path / 'best.sh'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    parents = [
        r
        for r in client.search_runs([exp], "tags.`tunelog.kind` = 'probe'", order_by=["attributes.start_time DESC"])
        if "mlflow.parentRunId" not in r.data.tags
    ]
    parent = parents[0]  # the `mlflow run` probe, newer than the roomy one
    summary = json.loads(
        open(client.download_artifacts(parent.info.run_id, "probe_summary.json", str(tmp_path))).read()
    )
    oom_batches = [c["train.batch_size"] for c in summary["failed_oom"]]
    assert 256 in oom_batches, summary  # recorded; the probe went on (and looked between 2 and 256)
    assert summary["best"]["peak_mem_gb"] <= budget and summary["best"]["config"]["train.batch_size"] < 256
    for m in summary["measured"]:  # what was measured agrees with what was recorded
        assert (m["outcome"] == "oom") == (m["peak_mem_gb"] > budget), m
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == summary["tested"]
    assert {"oom", "ok"} == {c.data.tags["tunelog.outcome"] for c in children}
    assert "plots/throughput_memory.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    script = (tmp_path / "best.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash") and "--set" in script
    ran = subprocess.run(
        ["bash", str(tmp_path / "best.sh")], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "outcome ok" in ran.stdout
    trained = client.search_runs([exp], "tags.`tunelog.kind` = 'train'")[0]
    assert trained.data.params["train.batch_size"] == str(summary["best"]["config"]["train.batch_size"])


def test_gradient_checkpointing_is_not_skipped_after_an_oom_without_it(tmp_path, store):
    """Checkpointing lowers memory: after batch 64 ran out without it, batch 64 with it still deserves a try."""
    raw = probe_raw()
    raw["probe"]["params"]["model.gradient_checkpointing"] = {"type": "categorical", "choices": [False, True]}
    probe = Probe(load_spec(write_spec(tmp_path / "p.yaml", raw)), Tracker(), max_memory_gb=1.0, echo=lambda s: None)
    oom = Measurement({"train.batch_size": 64, "lora.r": 4, "model.gradient_checkpointing": False}, "oom")
    assert probe.skip_reason({"train.batch_size": 64, "lora.r": 4, "model.gradient_checkpointing": True}, [oom]) == ""
    assert "ran out of memory" in probe.skip_reason(
        {"train.batch_size": 128, "lora.r": 4, "model.gradient_checkpointing": False}, [oom]
    )


def test_length_field_and_max_length_shape_the_worst_case_batch(tmp_path, store):
    """The worst case is the longest sample by the named field (audio seconds), cut at each candidate's max_length."""
    rows = [
        {"text": "kort", "seconds": 9.5},  # few tokens, but the longest audio: the worst case by seconds
        {"text": " ".join(["ein lang tekst med mange ord"] * 6), "seconds": 1.0},
        {"text": "middels lang tekst", "seconds": 3.0},
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    raw = probe_raw()
    raw["data"].update({"train": str(data), "format": "jsonl", "text_field": "text"})
    raw["probe"]["length_field"] = "seconds"
    probe = Probe(load_spec(write_spec(tmp_path / "p.yaml", raw)), Tracker(), echo=lambda s: None)
    probe.measurer.prepare()
    by_seconds, n = probe.measurer.worst_case(64)
    assert n == 3 and probe.measurer.tokenizer.decode(by_seconds.samples[0], skip_special_tokens=True).strip() == "kort"
    raw["probe"]["length_field"] = None  # by tokens: the long text, cut at max_length
    probe = Probe(load_spec(write_spec(tmp_path / "q.yaml", raw)), Tracker(), echo=lambda s: None)
    probe.measurer.prepare()
    assert len(probe.measurer.worst_case(12)[0].samples[0]) == 12
    m = probe.measure({"train.batch_size": 2, "lora.r": 4, "train.grad_accum": 1, "data.max_length": 12})
    assert m.outcome == "ok" and round(m.tokens_per_s / m.samples_per_s) == 12  # tokens per sample, as cut


def test_unknown_memory_knob_is_a_spec_error(tmp_path, store):
    import pytest

    from tunelog.errors import SpecError

    raw = probe_raw()
    raw["probe"]["memory_knobs"] = ["trainer.args.network_dimm"]
    with pytest.raises(SpecError, match=r"probe.memory_knobs.*network_dimm"):
        Probe(load_spec(write_spec(tmp_path / "p.yaml", raw)), Tracker(), echo=lambda s: None)


def test_candidates_obey_the_spec_rules_and_derived_params(tmp_path, store):
    """The fastest candidate is one the spec forbids: it is listed as rejected, costs no training, and the
    pick and its script carry the derived alpha, as the spec's own sweep would train it."""
    raw = probe_raw()
    raw["probe"] = {
        "params": {
            "train.batch_size": {"type": "categorical", "choices": [2, 16]},
            "lora.r": {"type": "categorical", "choices": [4, 8]},
        },
        "max_steps": 3,
        "min_seconds": 0,
        "headroom": 0.0,
    }
    raw["rules"] = [
        {
            "name": "no-wide-big-batch",
            "reject": "train.batch_size >= 16 and lora.r >= 8",
            "reason": "unstable in this team's runs",
        }
    ]
    raw["search"] = {
        "params": {"train.learning_rate": {"type": "float", "min": 1e-4, "max": 1e-2}},
        "derived": {"lora.alpha": "lora.r * 3"},
    }
    raw["lora"]["r"] = 4
    probe = Probe(load_spec(write_spec(tmp_path / "p.yaml", raw)), Tracker(), echo=lambda s: None)
    result = probe.run()
    summary = result.summary()
    (rejected,) = summary["rejected"]
    assert rejected["config"] == {"lora.r": 8, "train.batch_size": 16, "lora.alpha": 24}
    assert rejected["rule"].startswith("no-wide-big-batch: unstable")
    measured = [m["config"] for m in summary["measured"]]
    assert rejected["config"] not in measured and len(measured) == summary["tested"] == 3
    assert all(c["lora.alpha"] == 3 * c["lora.r"] for c in measured)  # every candidate as the spec derives it
    best = summary["best"]["config"]
    assert best != rejected["config"] and best["lora.alpha"] == 3 * best["lora.r"]
    assert f"lora.alpha={best['lora.alpha']}" in result.script


def test_effective_batch_held(tmp_path, store):
    """--effective-batch 8: accumulation follows the batch (2 x 4, 4 x 2, 8 x 1), a batch that does not divide
    8 is skipped, and the pick trains the same optimisation as the user's config."""
    raw = probe_raw()
    raw["probe"] = {
        "params": {
            "train.batch_size": {"type": "categorical", "choices": [2, 3, 4, 8]},
            "train.grad_accum": {"type": "categorical", "choices": [1, 2]},  # replaced by the held batch
        },
        "max_steps": 3,
        "min_seconds": 0,
        "headroom": 0.0,
    }
    probe = Probe(load_spec(write_spec(tmp_path / "p.yaml", raw)), Tracker(), echo=lambda s: None, effective_batch=8)
    summary = probe.run().summary()
    measured = {m["config"]["train.batch_size"]: m for m in summary["measured"]}
    assert set(measured) <= {2, 4, 8} and measured  # batch 3 cannot make 8
    for batch, m in measured.items():
        assert m["config"]["train.grad_accum"] == 8 // batch and m["effective_batch"].endswith("= 8")
    assert any("does not divide the effective batch 8" in s["why"] for s in summary["skipped"])
    best = summary["best"]["config"]
    assert best["train.batch_size"] * best["train.grad_accum"] == 8


def test_one_noisy_point_no_longer_stops_the_walk_short_of_the_batch_that_wins(tmp_path, store):
    """The stop that cost the larger tiny model its pick (issue 32), replayed from a scripted curve (named
    so: the search policy is under test, not the timing): samples/s rise with the batch up to the memory
    limit at 160, but batch 64's first measurement comes out 22% slow, as a busy machine makes it. The old
    walk stopped there and picked 32; the probe must walk on, find the largest batch that fits by bisection
    and pick it in the runoff."""
    raw = probe_raw()
    raw["probe"]["params"] = {"train.batch_size": {"type": "categorical", "choices": [2, 4, 8, 16, 32, 64, 128, 256]}}
    said: list[str] = []
    probe = Probe(load_spec(write_spec(tmp_path / "p.yaml", raw)), Tracker(), max_memory_gb=2.0, echo=said.append)
    seen: list[int] = []

    def scripted(values):
        batch = values["train.batch_size"]
        seen.append(batch)
        peak = 0.4 + batch * 0.01  # 2.0 GB reached at batch 160
        if peak > 2.0:
            return Measurement(values, "oom", "CPU memory budget", peak_gb=peak)
        speed = 300 * batch / (batch + 8)  # rising, flatter as the batch grows (32: 240, 160: 286)
        if batch == 64 and seen.count(64) == 1:
            speed *= 0.78  # the noisy first measurement: below 90% of batch 32
        return Measurement(values, "ok", samples_per_s=speed, peak_gb=peak, steps=4)

    probe.measure = scripted
    result = probe.run()
    fitting = [m.values["train.batch_size"] for m in result.measured if m.outcome == "ok"]
    assert 128 in seen  # walked past the noisy 64 (256 did not fit: predicted over, or out of memory)
    assert max(fitting) > 128  # bisected between 128 and 256 as a max-batch finder would
    assert result.best is not None and result.best.values["train.batch_size"] == max(fitting), seen
    # the runoff says each measurement as it goes (two rounds of its finalists), then its figures
    finalists = len(result.runoff)
    assert sum(line.startswith("runoff 1/2 ") for line in said) == finalists
    assert sum(line.startswith("runoff 2/2 ") for line in said) == finalists


def test_the_runoff_calls_a_tie_within_noise_for_the_largest_batch():
    """Finalists a few percent apart are one speed on a shared machine (one config's rounds spread wider):
    the largest batch wins the tie, as a max-batch finder would pick it; a clear lead still wins."""
    from tunelog.probe.search import _winner

    top = [Measurement({"train.batch_size": b}, "ok") for b in (64, 150, 128)]
    assert _winner(top, {0: 1387.0, 1: 1356.0, 2: 1300.0}) == 1  # 64 leads by 2.3%: a tie, 150 wins it
    assert _winner(top, {0: 1500.0, 1: 1356.0, 2: 1300.0}) == 0  # 64 leads by 10%: 64
    assert _winner(top, {1: 1356.0}) == 1  # only one finalist measured again


def test_a_pick_that_leaves_few_optimizer_steps_says_what_it_costs(tmp_path):
    """On 60 examples batch 32 gives 2 optimizer steps an epoch: the probe's best line is followed by a note
    with both counts (computed here from the data), and a pick that keeps enough steps gets none."""
    import math

    from conftest import demo_raw, write_spec
    from tunelog.cli.training import _steps_note
    from tunelog.spec import load_spec

    (tmp_path / "train.txt").write_text("".join(f"line {i}\n" for i in range(60)))
    raw = demo_raw(batch_size=8, max_steps=None, epochs=1)
    raw["data"] = {"train": str(tmp_path / "train.txt")}
    spec = load_spec(write_spec(tmp_path / "spec.yaml", raw))
    note = _steps_note(spec, {"train.batch_size": 32})
    assert note and f"{math.ceil(60 / 32)} optimizer steps an epoch" in note and f"gives {math.ceil(60 / 8)} " in note
    assert _steps_note(spec, {"train.batch_size": 4}) is None
