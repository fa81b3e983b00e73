"""One judge of how a run ended, whichever path saw it: the command trainer running a script, and the
importer reading the same script's log afterwards, say the same thing of the same lines."""

import json
import textwrap

from mlflow import MlflowClient

from conftest import command_example
from tunelog.importer import import_tree
from tunelog.logs.judge import Evidence, ends_in_traceback, judge
from tunelog.tracking import Tracker
from tunelog.train import run_training

CUBLAS = "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
LOG = ["step 1/8 loss=0.91", "step 2/8 loss=0.85", "Traceback (most recent call last):", '  File "train.py", line 9']


def test_a_cublas_alloc_failure_is_oom_when_the_script_runs_and_when_its_log_is_imported(tmp_path, store):
    script = tmp_path / "train.py"
    lines = [*LOG, CUBLAS]
    script.write_text(f"import sys\nprint({chr(10).join(lines)!r})\nsys.exit(1)\n")
    spec = command_example(tmp_path).with_overrides({"trainer.argv": ["{python}", str(script)]})
    run_id, ran = run_training(spec, Tracker())
    assert ran.outcome == "oom" and "CUBLAS_STATUS_ALLOC_FAILED" in ran.reason
    assert MlflowClient(store).get_run(run_id).data.tags["tunelog.outcome"] == "oom"

    folder = tmp_path / "runs" / "crashed"
    folder.mkdir(parents=True)
    (folder / "args.json").write_text(json.dumps({"lr": 1e-4, "max_steps": 8}))
    (folder / "train.log").write_text("\n".join(lines) + "\n")
    import_tree(tmp_path / "runs", Tracker(), "imported")
    (run,) = Tracker().all_runs("imported")
    assert run.tags["tunelog.outcome"] == "oom" and "CUBLAS_STATUS_ALLOC_FAILED" in run.tags["tunelog.reason"]


def test_a_traceback_counts_only_where_the_log_ends_in_it():
    early = ["Traceback (most recent call last):", '  File "optuna.py", line 3', "ValueError: trial 0 failed"]
    later = [f"step {i} loss=0.5" for i in range(1, 20)]
    assert ends_in_traceback(early + later) is None
    assert judge(Evidence(lines=early + later, params={"max_steps": 19}, max_step=19))[0] == "ok"
    assert ends_in_traceback(later + early) == "ValueError: trial 0 failed"
    outcome, reason = judge(Evidence(lines=later + early))
    assert outcome == "failed" and reason.endswith("ValueError: trial 0 failed")
    # the trainer's own record (its state at max_steps) outranks a traceback printed after training
    assert judge(Evidence(lines=later + early, trainer_finished=True))[0] == "ok"


def test_a_failed_script_says_its_last_error_line_not_only_its_exit_code(tmp_path, store):
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            print("loading")
            raise ValueError("learning rate must be positive, got -1")
            """
        )
    )
    spec = command_example(tmp_path).with_overrides({"trainer.argv": ["{python}", str(script)]})
    _, ran = run_training(spec, Tracker())
    assert ran.outcome == "failed"
    assert ran.reason == "exit code 1: ValueError: learning rate must be positive, got -1"


def test_every_name_validation_accepts_in_probe_total_steps_is_there_when_the_eta_is_computed(tmp_path):
    """One environment of names: `effective_batch` passes validation, so the ETA has it (it was silently
    'unknown' while the probe evaluated with fewer names than validation allowed)."""
    from tunelog.probe.measure import eta_seconds

    spec = command_example(tmp_path).with_overrides(
        {"probe.total_steps": "trainer.args.epochs * n_samples / effective_batch", "train.batch_size": 4}
    )
    # 2 epochs x 100 samples / 4 a step = 50 steps of 4 samples at 20 samples/s
    assert eta_seconds(spec, samples_per_s=20.0, n_samples=100) == 50 * 4 / 20.0
    assert eta_seconds(spec, samples_per_s=20.0, n_samples=None) is None  # no readable data: no plan
