"""One study, many processes: claims through the study storage (what makes one sweep run out of invocations
started together), each --workers process's share of the machine, and the helpers the multi-invocation tests
share (a cheap spec over the command trainer's test script, killing one invocation mid-trial)."""

import os
import signal
import subprocess
import time

import optuna
import psutil
import pytest
import yaml
from optuna.trial import TrialState

from conftest import REPO
from tunelog.sweep import open_storage
from tunelog.sweep.workers import gpu_groups, worker_envs

N_TRIALS = 6


def shared_spec(tmp_path, sleep: float) -> str:
    """The diffusion example's script with a small search space and two named configs."""
    raw = yaml.safe_load((REPO / "examples/diffusion_lora/spec.yaml").read_text())
    raw["trainer"]["argv"][1] = str(REPO / "tests/fixtures/fake_diffusion_train.py")
    raw["trainer"]["argv"] += ["--sleep", str(sleep)]
    raw["data"]["train"] = str(REPO / "examples/diffusion_lora/captions.txt")
    raw["tracking"]["experiment"] = "shared"
    raw["configs"] = {
        "low": {"purpose": "a low LR", "overrides": {"train.learning_rate": 5e-5}},
        "high": {"purpose": "a high LR", "overrides": {"train.learning_rate": 2e-4}},
    }
    raw["search"] = {
        "study": "shared",
        "n_trials": N_TRIALS,
        "sampler": "random",
        "seed": 1,
        # the headline (`loss`) is what a pruner judges, every step: these tests count trials, not prune them
        "pruner": {"type": "none"},
        "params": {"train.learning_rate": {"type": "float", "min": 2e-5, "max": 4e-4, "log": True}},
    }
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and everything it started (the command trainer's script has its own session)."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def running_trial_of(storage: str, pid: int, proc: subprocess.Popen, seconds: float = 600) -> int:
    """The number of a trial `pid` is training, once there is one; waits on the study's state."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            study = optuna.load_study(study_name="shared", storage=open_storage(storage))
        except KeyError:
            study = None
        for tr in study.get_trials(states=(TrialState.RUNNING,)) if study else []:
            if tr.user_attrs.get("tunelog.owner", "").endswith(f":{pid}") and tr.user_attrs.get("tunelog.run_id"):
                return tr.number
        time.sleep(0.2)
    raise AssertionError(f"process {pid} never trained a trial (exit code {proc.poll()})")


def kill_one_mid_trial(procs: list[subprocess.Popen], storage: str) -> tuple[int, list[str]]:
    """SIGKILL the first invocation (and its script) once it trains a trial; wait for the others.
    Returns the killed trial's number and the others' output; nothing is left running either way."""
    try:
        killed = running_trial_of(storage, procs[0].pid, procs[0])
        kill_tree(procs[0])
        outputs = [p.communicate(timeout=600)[0] for p in procs[1:]]
    finally:
        for p in procs:
            if p.poll() is None:
                kill_tree(p)
    assert all(p.returncode == 0 for p in procs[1:]), outputs
    return killed, outputs


def _claim_in_a_process(storage: str, results) -> None:
    import optuna

    from tunelog.sweep.study import claim

    study = optuna.load_study(study_name="race", storage=open_storage(storage))
    results.put(claim(study, "start"))


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_claim_is_won_by_exactly_one_of_many_processes(tmp_path, kind):
    """What makes one sweep run and one queue of named configs out of invocations started in the same
    second: six processes claim the study's start at once through its storage; exactly one wins. (Three
    real invocations, one SIGKILLed, on PostgreSQL: tests/test_distributed.py.)"""
    import multiprocessing

    storage = str(tmp_path / "s.journal") if kind == "journal" else f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="race", storage=open_storage(storage))
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    procs = [spawn.Process(target=_claim_in_a_process, args=(storage, results)) for _ in range(6)]
    try:
        for p in procs:
            p.start()
        won = [results.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert sorted(won) == [False] * 5 + [True]


def test_each_worker_gets_its_own_gpus_and_a_share_of_the_cores():
    """Pure planning, checked on a made-up CUDA_VISIBLE_DEVICES (no GPU here): which devices and threads
    each --workers process is started with."""
    envs = worker_envs({"CUDA_VISIBLE_DEVICES": "0,1,2,3", "PATH": "/bin"}, workers=2, gpus_per_trial=2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "2,3"]
    assert all(e["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2)) for e in envs)
    kept = worker_envs({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "7"}, workers=2, gpus_per_trial=1)
    assert all("CUDA_VISIBLE_DEVICES" not in e or e["CUDA_VISIBLE_DEVICES"] == "" for e in kept)
    assert all(e["OMP_NUM_THREADS"] == "7" for e in kept)  # the user's own setting wins
    assert gpu_groups(["0", "1", "2"], 3, 1) == ["0", "1", "2"]
    try:
        gpu_groups(["0", "1"], 2, 2)
    except Exception as exc:  # noqa: BLE001
        assert "needs 4 GPUs; 2 visible (0,1); accepted: --workers 1 or fewer" in str(exc)
    else:
        raise AssertionError("4 GPUs asked of 2 was accepted")
