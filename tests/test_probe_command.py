"""Probing a command trainer: the fixture script per candidate, its printed or sampled memory, CUDA OOM text."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from conftest import command_example as example
from conftest import subprocess_env
from tunelog.tracking import Tracker


def probe_example(tmp_path, **args):
    """The example with the fixture's stand-ins for cost: step time grows with the batch, memory with batch x dim."""
    spec = example(tmp_path, step_time=0.02, step_time_per_sample=0.005, **args)
    return spec.with_overrides({"probe.headroom": 0.0, "probe.max_steps": 4})


def probe_summary(client, run_id, tmp_path):
    import json

    return json.loads(Path(client.download_artifacts(run_id, "probe_summary.json", str(tmp_path))).read_text())


def test_probe_of_a_command_trainer_under_a_cpu_budget(tmp_path, store):
    """Candidates run the script with the step cap; its process tree's RSS goes over the budget for the big ones."""
    path = tmp_path / "spec.yaml"
    probe_example(tmp_path, mb_per_sample_dim=0.5)  # writes spec.yaml with the fixture's flags
    raw = yaml.safe_load(path.read_text())
    raw["probe"].update({"headroom": 0.0, "max_steps": 4})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = subprocess_env(store)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunelog.cli",
            "probe",
            str(path),
            "--max-memory-gb",
            "0.2",
            "-o",
            str(tmp_path / "best.sh"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("diffusion-lora").experiment_id
    parent = next(
        r for r in client.search_runs([exp], "tags.`tunelog.kind` = 'probe'") if "mlflow.parentRunId" not in r.data.tags
    )
    summary = probe_summary(client, parent.info.run_id, tmp_path)
    # 0.5 MB x batch x dim held: dim 32 fits up to batch 8 (128 MB + the interpreter), 64 up to batch 4
    assert {"train.batch_size": 8, "trainer.args.network_dim": 64} in summary["failed_oom"]
    best = summary["best"]["config"]  # batch 8 fit and 16 did not: the probe also looked between them
    assert best["trainer.args.network_dim"] == 32 and 8 <= best["train.batch_size"] < 16
    assert 0.12 < summary["best"]["peak_mem_gb"] <= 0.2  # the tree's sampled RSS, not this process's
    # probe.total_steps (epochs x samples / batch) x the batch over the measured samples/s: 2 epochs x 2 captions
    assert summary["best"]["eta_s"] == pytest.approx(2 * 2 / summary["best"]["samples_per_s"])
    skipped = {
        (s["config"]["train.batch_size"], s["config"]["trainer.args.network_dim"]): s["why"] for s in summary["skipped"]
    }
    assert "predicted peak" in skipped[(16, 32)]  # a line through batch 1..8's sampled peaks: never run
    assert summary["tested"] < summary["grid"]
    script = (tmp_path / "best.sh").read_text()
    assert f"--train_batch_size {best['train.batch_size']}" in script and "--network_dim 32" in script
    assert "--max_train_steps" not in script
    ran = subprocess.run(["bash", str(tmp_path / "best.sh")], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert (tmp_path / "probe-best-output/last.safetensors").is_file()


def test_probe_reads_printed_gpu_memory_and_cuda_oom(tmp_path, store):
    """A stand-in GPU (the fixture's --fake_vram_gb, since no GPU runs here): the script prints its peak and
    a CUDA OOM past 0.6 GB; the probe takes the printed figure and records both kinds of OOM."""
    spec = probe_example(tmp_path, mb_per_sample_dim=0.15, fake_vram_gb=0.6)  # 0.5 GB + 0.15 MB x batch x dim
    spec = spec.with_overrides({"probe.memory_metric": "peak_vram_gb"})
    from tunelog.probe import Probe

    result = Probe(spec, Tracker(), max_memory_gb=0.55, echo=lambda s: None, exhaustive=True).run()
    by_config = {(m.values["train.batch_size"], m.values["trainer.args.network_dim"]): m for m in result.measured}
    assert by_config[(8, 128)].outcome == "oom" and "CUDA out of memory" in by_config[(8, 128)].reason
    assert by_config[(4, 128)].outcome == "oom" and "printed peak 0.577 GB" in by_config[(4, 128)].reason
    assert by_config[(1, 32)].peak_gb == 0.505  # as printed, not the process's RSS
    assert result.best is not None and result.best.values == {"train.batch_size": 8, "trainer.args.network_dim": 32}


def test_gpu_memory_by_pid_from_nvidia_smi_csv():
    """nvidia-smi cannot run here: its CSV (as `--query-compute-apps=pid,used_memory` prints it) is given."""
    from tunelog.training.memory import gpu_gb_of

    csv = "4101, 20480\n4102, 1024\n999, 70000\n4103, [N/A]\n"
    assert gpu_gb_of(csv, [4101, 4102, 4103]) == (20480 + 1024) * 2**20 / 1e9  # the tree's PIDs, not pid 999
    assert gpu_gb_of("", [4101]) == 0.0


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_mid_candidate_closes_the_probe_and_leaves_no_process(tmp_path, store, sig):
    """Ctrl-C or SIGTERM while a candidate's script trains (its pid file written: mid-candidate for certain):
    the probe run ends KILLED, tunelog exits 130/143 without a traceback, and the script is gone."""
    import signal

    import psutil

    from conftest import signal_when_ready

    pid_file = tmp_path / "script.pid"
    probe_example(tmp_path, sleep=0.5, pid_file=pid_file)
    raw = yaml.safe_load((tmp_path / "spec.yaml").read_text())
    raw["probe"].update({"max_steps": 100_000, "min_seconds": 3600})  # the candidate would train for an hour
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    def script_started():
        return int(pid_file.read_text()) if pid_file.is_file() and pid_file.read_text().strip() else None

    argv = [sys.executable, "-m", "tunelog.cli", "probe", tmp_path / "spec.yaml", "-o", tmp_path / "best.sh"]
    script, code, err = signal_when_ready(
        argv, subprocess_env(store), script_started, "a candidate", getattr(signal, sig)
    )
    assert code == (130 if sig == "SIGINT" else 143), err[-2000:]
    assert "Traceback" not in err
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("diffusion-lora").experiment_id
    runs = client.search_runs([exp], "tags.`tunelog.kind` = 'probe'")
    assert runs and {r.info.status for r in runs} == {"KILLED"}  # the probe run; no candidate finished
    try:
        alive = psutil.Process(script).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        alive = False
    assert not alive  # the candidate's script was stopped with tunelog


def test_probe_times_a_trainer_consoles_steps_not_its_start_up_lines(tmp_path, store):
    """A Trainer-style console prints dozens of numbered start-up lines in one instant, then log dicts without a
    step: the probe's samples/s is the script's own figure's order (it was 1,000-5,000x it when start-up lines
    counted as steps), and its ETA reads a JSON-array dataset's size."""
    import json

    from tunelog.probe.command import CommandMeasurer

    rows = [{"instruction": "a", "input": str(i), "output": "b"} for i in range(200)]
    (tmp_path / "tiny_alpaca.json").write_text(json.dumps(rows, indent=1))
    own = tmp_path / "own.txt"
    raw = {
        "model": {"name": "my-script-model"},
        "data": {"train": "tiny_alpaca.json"},
        "tracking": {"experiment": "console", "metric": "eval/loss"},
        "train": {"batch_size": 8, "max_steps": 40},
        "trainer": {
            "type": "command",
            "argv": [
                "{python}",
                str(Path(__file__).parent / "fixtures/trainer_console.py"),
                "--batch_size",
                "{train.batch_size}",
                "--max_steps",
                "{train.max_steps}",
                "--own_file",
                str(own),
            ],
        },
        "probe": {"warmup_steps": 2, "max_steps": 10, "total_steps": "n_samples / train.batch_size"},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    from tunelog.spec import load_spec

    spec = load_spec(tmp_path / "spec.yaml")
    measurer = CommandMeasurer(spec, spec.probe, None)
    assert measurer.prepare() == len(rows)
    measured = measurer.measure({"train.batch_size": 8})
    assert measured.outcome == "ok", measured.reason
    batch, figure = own.read_text().split()
    # the same run, timed by the script and by the probe: equal but for how each summarises the steps
    assert int(batch) == 8 and 0.5 < measured.samples_per_s / float(figure) < 2.0, (measured.samples_per_s, figure)
    assert measured.eta_s is not None and measured.steps == 12
