"""changelog rules on a history built to trip a naive one (tests/story_history.py): outcomes from log words,
anomalies flagged in place, sane parents, change sets, phases, results side by side, eval keys, cost, length,
and `tunelog diff`. Each rule is asserted on the Markdown and on `--format json`."""

import json

import pytest

from conftest import run_cli
from tunelog import changelog as cl
from tunelog import tracking as t
from tunelog.logs.judge import judge_log, nonfinite_line
from tunelog.logs.parse import LogParser
from tunelog.tracking import Tracker


@pytest.fixture
def story(tmp_path, store):
    from story_history import build_tree
    from tunelog.importer import import_tree

    import_tree(build_tree(tmp_path / "legacy"), Tracker(), "story", metric="per_greedy")
    log = cl.collect_and_build(Tracker(), "story")
    proc = run_cli("changelog", "--experiment", "story", "--format", "json", "--no-log")
    assert proc.returncode == 0, proc.stderr
    return log, cl.to_markdown(log), json.loads(proc.stdout)


def _json_entry(data, name):
    return next(e for e in data["entries"] if e["name"] == name)


@pytest.mark.parametrize(
    "line",
    ["WARNING loss is nan at batch 12000", "nan loss detected", "Loss: nan", "train loss became inf", "loss=-inf"],
)
def test_nonfinite_loss_in_words(line):
    assert nonfinite_line(line)


@pytest.mark.parametrize("line", ["loss is 0.37", "info: loss 1.2", "financial loss", "val_loss_nan_count=0"])
def test_no_false_nonfinite(line):
    assert not nonfinite_line(line)


def test_truncated_log_is_incomplete_with_the_reason():
    text = "batch 1000, loss: 0.9\nbatch 3000, loss: 0.8\n"
    outcome, reason = judge_log(text, LogParser().parse_text(text), {"nBatch": 12000})
    assert (outcome, reason) == ("incomplete", "log ends at step 3000 of nBatch=12000")
    full = text + "batch 12000, loss: 0.5\n"
    assert judge_log(full, LogParser().parse_text(full), {"nBatch": 12000}) == ("ok", "")


def test_outcomes_from_the_logs(story):
    log, md, data = story
    assert log.by_name("gru_ctc_reg3").outcome == "incomplete"
    assert log.by_name("gru_ctc_reg3").reason == "log ends at step 3000 of nBatch=12000"
    assert log.by_name("run16_2").outcome == "diverged"
    assert log.by_name("run16_2").reason == "log says loss is nan at batch 12000"
    assert _json_entry(data, "run16_2")["outcome"] == "diverged"
    assert _json_entry(data, "gru_ctc_reg3")["outcome"] == "incomplete"


def test_anomalies_are_flagged_in_their_own_heading(story):
    log, md, data = story
    heading = "### run16_2 — anomaly: repeat 335% worse than run16_greedy, log says loss is nan at batch 12000"
    assert heading in md.splitlines()
    assert "### gru_ctc_reg3 — anomaly: incomplete, log ends at step 3000 of nBatch=12000" in md.splitlines()
    assert _json_entry(data, "run16_2")["anomaly"] == [
        "repeat 335% worse than run16_greedy",
        "log says loss is nan at batch 12000",
    ]


def test_effects_are_measured_against_the_sane_twin(story):
    log, md, data = story
    third = log.by_name("run16_3")
    assert third.parent_name == "run16_greedy" and third.twin_of == "run16_2"
    assert "Changes vs run16_greedy (run16_2, the same config, was anomalous):" in md
    dropout = next(w for w in log.worked if w.change == "dropout 0.1→0.2")
    assert dropout.mean_gain == pytest.approx(0.001)  # not the 0.671 a naive parent (run16_2) would credit
    top = max(log.worked, key=lambda w: w.mean_gain)
    assert "dropout" not in top.change
    assert {w["change"]: w["mean_gain"] for w in data["worked"]}["dropout 0.1→0.2"] == pytest.approx(0.001)


def test_keys_changed_together_are_one_change_set(story):
    log, md, data = story
    together = "reg 0.05→0.1 + scheduler linear→warmup_cosine + warmup_steps +1000"
    row = next(w for w in log.worked if w.change == together)
    assert row.runs == 1 and row.anecdote and row.run_names == ["gru_ctc_reg4"]
    assert not any(w.change.startswith("scheduler") for w in log.worked)  # never credited alone
    assert f"| `{together}` | 1 | -0.03 | 1 run: an anecdote |" in md
    lr = next(w for w in log.worked if w.change == "lr 0.001→0.002")  # recurs: reg5 and run16_lr
    assert lr.runs == 2 and lr.mean_gain == pytest.approx(0.012) and lr.spread == pytest.approx(0.004)
    assert "| `lr 0.001→0.002` | 2 | -0.012 | 0.004 (gru_ctc_reg5, run16_lr) |" in md
    assert together in {w["change"] for w in data["worked"]}


def test_phases_from_name_families_and_from_a_file(story, tmp_path):
    log, md, data = story
    assert {e.name: e.group for e in log.entries}["gru_ctc_reg2"] == "Phase: gru_ctc_reg*"
    assert {e.name: e.group for e in log.entries}["run16_lr"] == "Phase: run16*"
    phases = {p.name: p for p in log.phases}
    assert log.entry(phases["Phase: run16*"].best_id).name == "run16_lr"
    assert phases["Phase: run16*"].changes == "dropout 0.1→0.2 + lr 0.001→0.002"
    assert "## Phase: gru_ctc_reg*" in md and "## Phases" in md
    assert [p["name"] for p in data["phases"]] == ["Phase: gru_ctc_reg*", "Phase: run16*"]
    named = tmp_path / "phases.yaml"
    named.write_text("phases:\n  regularisation: [gru_ctc_reg*]\n  decoder16: run16_*\n")
    proc = run_cli("changelog", "--experiment", "story", "--phases", named, "--no-log", "--direction", "min")
    assert proc.returncode == 0 and "## Phase: regularisation" in proc.stdout and "## Phase: decoder16" in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("regularisation: {pattern: 3}\n")
    proc = run_cli("changelog", "--experiment", "story", "--phases", bad, "--no-log")
    assert proc.returncode == 2 and "bad.yaml: regularisation: accepted: a run-name pattern" in proc.stderr


def test_two_results_side_by_side_and_metric_picks_the_headline(story):
    log, md, data = story
    assert log.result_keys == ["per_greedy", "per_beam"]
    assert "per_greedy: 0.185 (-0.014 vs parent); per_beam 0.18;" in md
    assert _json_entry(data, "run16_lr")["results"] == {"per_beam": 0.18, "per_greedy": 0.185}
    proc = run_cli("changelog", "--experiment", "story", "--metric", "per_beam", "--direction", "min", "--no-log")
    assert proc.returncode == 0 and "Headline metric: `per_beam`" in proc.stdout


def test_cost_of_getting_to_the_best(story):
    log, md, data = story
    assert [log.entry(r).name for r in log.timeline][-1] == "run16_lr"
    # every run started up to the best's start, dead ends included (the runs before the baseline too)
    best = log.entry(log.best_id)
    before = [e for e in log.entries if e.start_ms <= best.start_ms and e.cost_h is not None and e.kind != "sweep"]
    assert log.timeline_cost_h == pytest.approx(sum(e.cost_h for e in before))
    assert f"Getting to the best cost {log.timeline_cost_h:.3g} device-h: every run started before it" in md


def test_kept_lists_only_keys_that_vary_among_siblings(story):
    log, md, data = story
    second = log.by_name("gru_ctc_reg2")
    assert "nBatch" not in second.changes.kept and "decoder" not in second.changes.kept  # same all phase long
    assert "Kept: `lr`=0.001, `scheduler`=linear, `warmup_steps`=0, 4 other keys unchanged" in md


def test_results_on_another_eval_set_do_not_compare(story, store):
    tracker = Tracker()
    parent = log_scored(tracker, "general_1", 0.30, "general")
    log_scored(tracker, "dialect_1", 0.10, "dialect", parent)  # better number, other eval set
    log = cl.collect_and_build(tracker, "story")
    dialect = log.by_name("dialect_1")
    assert not dialect.comparable and dialect.parent_result is None
    assert log.entry(log.best_id).name == "run16_lr"  # the main eval set's best, not the dialect number
    assert "(not comparable with its parent: eval set changed)" in cl.to_markdown(log)
    assert "Best on another eval set (dialect, not comparable): dialect_1 (0.1)." in cl.to_markdown(log)
    assert not any("beam" in w.change for w in log.worked)  # the eval-set change credited nothing


def log_scored(tracker, name, value, eval_key, based_on=None):
    tags = {
        t.TAG_KIND: t.KIND_TRAIN,
        t.TAG_NAME: name,
        t.TAG_OUTCOME: "ok",
        t.TAG_METRIC: "per_greedy",
        t.TAG_DIRECTION: "minimize",
        t.TAG_EVAL_KEY: eval_key,
        t.TAG_BASED_ON: based_on,
    }
    start = 1_800_000_000_000 + int(value * 1000)
    params = {"decoder": "gru16", "beam": "8" if eval_key == "dialect" else "4"}
    return tracker.create_finished_run(
        "story", name, start, start + 60_000, "FINISHED", params, tags, [("per_greedy", value, start, 0)]
    )


def test_diff_two_runs_by_name(story):
    proc = run_cli("diff", "run16_greedy", "run16_lr", "--experiment", "story", "--only-changed")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.split() == ["~", "dropout", "0.1", "0.2", "changed"] for line in lines)
    assert any(line.split()[:4] == ["per_greedy", "0.2", "0.185", "-0.015"] for line in lines)
    assert not any(line.split()[:1] in (["decoder"], ["beam"], ["loss"]) for line in lines)  # equal: left out
    assert "lineage: run16_greedy -> run16_3 -> run16_lr" in proc.stdout
    md = run_cli("diff", "run16_greedy", "run16_lr", "--experiment", "story", "--md").stdout
    assert "| `~ dropout` | 0.1 | 0.2 | changed |" in md and "| `beam` |" not in md
    assert "params the same in both: --all lists them" in md  # the equal ones: one line by default
    every = run_cli("diff", "run16_greedy", "run16_lr", "--experiment", "story", "--md", "--all").stdout
    assert "| `beam` | 4 | 4 |  |" in every
    missing = run_cli("diff", "run16_greedy", "nope", "--experiment", "story")
    assert missing.returncode == 1 and "no run 'nope' in experiment 'story'" in missing.stderr
