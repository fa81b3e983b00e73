"""Shared fixtures: a real MLflow store (SQLite in a temp dir) and a quick demo spec."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo"
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: N processes share the cores, one thread each
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


def pytest_collection_modifyitems(items: list) -> None:
    """The `slow` tests (a minute each on a 2-core machine) first: with `--dist load` they start at once, one per
    pytest process, and the short ones fill in around them instead of one slow test running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def empty_store_file(tmp_path_factory) -> Path:
    """An MLflow SQLite file with its tables made once: creating them costs ~5 s a store."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    with sqlite3.connect(path) as con:  # fold any WAL pages into the file before it is copied
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store_file) -> str:
    """A fresh SQLite MLflow store for this test; MLFLOW_TRACKING_URI points at it."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    shutil.copy(empty_store_file, tmp_path / "store" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    return uri


def demo_raw(**train) -> dict:
    """The demo spec as data, with absolute paths and a short training for tests."""
    raw = yaml.safe_load((DEMO / "demo.yaml").read_text())
    raw["model"]["tokenizer"] = str(DEMO / "tokenizer.json")
    raw["data"]["train"] = str(DEMO / "data/general/train.txt")
    raw["data"]["eval"] = str(DEMO / "data/general/eval.txt")
    raw["train"].update({"max_steps": 25, "batch_size": 8, "eval_every": 10, **train})
    raw["tracking"]["experiment"] = "test"
    for section in ("search", "pipeline"):  # tests that need them write their own
        raw.pop(section, None)
    return raw


def write_spec(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def quick_spec(tmp_path) -> Path:
    return write_spec(tmp_path / "quick.yaml", demo_raw())


def subprocess_env(uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    env["MLFLOW_TRACKING_URI"] = uri
    env["PYTHONPATH"] = str(REPO / "src")
    # the venv's bin first, as for a user who activated it: `mlflow run` calls `python` from PATH
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*argv) -> CliResult:
    """`tunelog ARGV` in this process, as the console script runs it (click's main with tunelog's error
    mapping): the same exit codes and output as a subprocess, without 4-5 s of imports per call."""
    from tunelog.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    uri = os.environ.get("MLFLOW_TRACKING_URI")  # the command pins its store in the environment: put it back
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            if uri is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = uri
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def imported(tmp_path, store):
    """The legacy history (tests/legacy_history.py) imported into the test store as experiment `speech`."""
    from legacy_history import build_tree
    from tunelog.importer import import_tree
    from tunelog.tracking import Tracker

    tree = build_tree(tmp_path / "legacy")
    report = import_tree(tree, Tracker(), "speech", metric="val_loss")
    return tree, report


def command_example(tmp_path: Path, **args):
    """examples/diffusion_lora/spec.yaml driving the test fixture script, with extra `--flag value` args."""
    from tunelog.spec import load_spec

    raw = yaml.safe_load((REPO / "examples/diffusion_lora/spec.yaml").read_text())
    raw["trainer"]["argv"][1] = str(REPO / "tests/fixtures/fake_diffusion_train.py")
    raw["data"]["train"] = str(REPO / "examples/diffusion_lora/captions.txt")
    raw["trainer"]["argv"] += [item for k, v in args.items() for item in (f"--{k}", str(v))]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(path)


def ctrl_c_as_in_a_terminal() -> None:
    """In the child before it starts: SIGINT back to its default. A shell without job control starts
    background commands with SIGINT ignored, and Python then never raises KeyboardInterrupt; a test
    that sends Ctrl-C must not depend on how the suite itself was started."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def signal_when_ready(argv: list, env: dict, ready, what: str, sig=None):
    """Start `argv`, wait until `ready()` returns something (state in the store or on disk, not a clock: up to
    10 minutes on a loaded machine), send `sig` (SIGTERM) and wait for the exit; the process is killed
    whatever happens. Returns (what ready() returned, the exit code, stderr)."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(
        [str(a) for a in argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    deadline, got = time.monotonic() + 600, None
    try:
        while got is None and time.monotonic() < deadline and proc.poll() is None:
            got = ready() or None
            if got is None:
                time.sleep(0.3)
        assert got is not None, f"{what} never happened: {proc.communicate()[1][-2000:]}"
        proc.send_signal(sig or signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return got, proc.returncode, err


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serves(proc, port: int) -> bool:
    """True when `proc` or one of its children listens on `port`: the answer on that port is this test's
    server, not another pytest worker's that took the same free port a moment earlier."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for member in family:
        with contextlib.suppress(psutil.Error):
            for conn in member.net_connections(kind="inet"):
                if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                    return True
    return False


def _await_server(proc, url: str, port: int, deadline: float) -> bool:
    """Waits for the server's health answer (on a loaded machine, minutes): True once up, False when the
    process ended first (its port taken)."""
    import time
    import urllib.request

    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                if answer.status == 200 and serves(proc, port):
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


@contextlib.contextmanager
def mlflow_server(root: Path, backend: str | None = None, app: str | None = None):
    """`mlflow server --serve-artifacts [--app-name APP]` on 127.0.0.1 over a SQLite store in `root` (or `backend`), until the
    block ends; yields its http URL. Waits on the server's health answer, not on a clock: up to 3 minutes
    on a loaded machine (a port another test took meanwhile: a new port), and the process group is
    killed whatever happens."""
    import subprocess
    import time

    root.mkdir(parents=True, exist_ok=True)
    if backend is None:  # made by the server itself: its Default experiment then keeps artifacts behind the proxy
        backend = f"sqlite:///{root / 'server.db'}"
    log = open(root / "server.log", "w")  # noqa: SIM115 (closed below)
    deadline, proc = time.monotonic() + 180, None
    try:
        for _ in range(3):
            port = free_port()
            cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--serve-artifacts"]
            cmd += ["--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port)]
            cmd += ["--workers", "1"] + (["--app-name", app] if app else [])
            # no job runner (MLflow's GenAI jobs: a huey consumer with 5 workers beside every server), which
            # tunelog never uses: 2 processes and their CPU less per server on a 2-core machine
            env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
            url = f"http://127.0.0.1:{port}"
            if _await_server(proc, url, port, deadline):
                break
            _kill_group(proc)
        else:
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        yield url
    finally:  # the test is done with it: no graceful shutdown to wait for (3 s a server)
        if proc is not None:
            _kill_group(proc)
        log.close()


def _kill_group(proc) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def mlflow_models_serve(model_uri: str, log_path: Path, store: str):
    """`mlflow models serve -m MODEL_URI --env-manager local` on a free port of 127.0.0.1 until the block ends;
    yields its URL once it answers (waits on its health answer, up to 5 minutes on a loaded machine)."""
    import subprocess
    import time

    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115 (closed below)
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(store), start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert _await_server(proc, url, port, time.monotonic() + 300), log_path.read_text()[-2000:]
        yield url
    finally:
        _kill_group(proc)
        log.close()


def ask(url: str, payload: dict) -> dict:
    """POST a JSON payload to a served model's /invocations."""
    import json
    import urllib.request

    body = json.dumps(payload).encode()
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.loads(answer.read())
