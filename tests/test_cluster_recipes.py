"""examples/cluster: the SLURM array script, the Kubernetes Indexed Job and the `mlflow run --backend kubernetes`
files, rendered with sample values; each must run a command tunelog's own CLI accepts."""

import json
import re
import shlex

import yaml

from conftest import REPO
from tunelog.cli import cli

CLUSTER = REPO / "examples" / "cluster"
SAMPLE = {
    "SPEC": str(REPO / "examples/demo/demo.yaml"),
    "TUNELOG_STORAGE": "postgresql://tunelog:pw@db:5432/optuna",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "IMAGE": "registry.example.com/tunelog:latest",
    "WORKERS": "4",
    "N_TRIALS": "40",
}


def envsubst(text: str) -> str:
    """What `envsubst` does with the sample values: `${NAME}` filled (a KeyError if a value is missing);
    Kubernetes' own `$(NAME)` left for the kubelet."""
    return re.sub(r"\$\{(\w+)\}", lambda m: SAMPLE[m.group(1)], text)


def accepted(argv: list[str]) -> dict:
    """The options click parsed from `tunelog ARGV`; raises on anything the CLI would refuse."""
    assert argv[0] == "tunelog", argv
    command = cli.commands[argv[1]]
    with command.make_context(argv[1], argv[2:]) as ctx:
        return ctx.params


def test_slurm_array_runs_one_sweep_worker_per_task():
    text = (CLUSTER / "slurm_array.sh").read_text()
    assert "#SBATCH --array=" in text and "#SBATCH --gres=gpu:1" in text
    line = next(x for x in text.splitlines() if x.startswith("exec tunelog sweep"))
    rendered = re.sub(r'"\$\{(\w+)\}"', lambda m: shlex.quote(SAMPLE[m.group(1)]), line)
    params = accepted(shlex.split(rendered)[1:])
    assert params["storage"] == SAMPLE["TUNELOG_STORAGE"] and params["n_trials"] == 40


def test_the_study_server_job_runs_a_study_server_and_its_workers_take_its_grpc_address():
    text = (CLUSTER / "study_server.sh").read_text()
    line = next(x for x in text.splitlines() if x.startswith("exec tunelog study-server"))
    values = {"TUNELOG_DB": SAMPLE["TUNELOG_STORAGE"]}  # `${NAME:-default}`: the default where unset
    rendered = re.sub(r'"\$\{(\w+)(?::-([^}]*))?\}"', lambda m: shlex.quote(values.get(m.group(1), m.group(2))), line)
    params = accepted(shlex.split(rendered)[1:])
    assert params["storage"] == SAMPLE["TUNELOG_STORAGE"] and params["port"] == 13000 and params["host"] == "0.0.0.0"
    worker = accepted(["tunelog", "sweep", SAMPLE["SPEC"], "--storage", "grpc://study-host:13000"])
    assert worker["storage"] == "grpc://study-host:13000"


def test_kubernetes_indexed_job_renders_to_a_valid_worker():
    job = yaml.safe_load(envsubst((CLUSTER / "k8s_indexed_job.yaml").read_text()))
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 4
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["TUNELOG_STORAGE"]["valueFrom"]  # the password lives in a Secret
    argv = [a.replace("$(TUNELOG_STORAGE)", SAMPLE["TUNELOG_STORAGE"]) for a in container["command"]]
    assert accepted(argv)["storage"] == SAMPLE["TUNELOG_STORAGE"]


def test_mlflow_kubernetes_backend_files():
    folder = CLUSTER / "mlflow-kubernetes"
    config = json.loads((folder / "kubernetes_config.json").read_text())
    assert set(config) == {"kube-context", "repository-uri", "kube-job-template-path"}
    assert (REPO / config["kube-job-template-path"]).is_file()
    template = (folder / "kubernetes_job_template.yaml").read_text()
    for slot in ("MLflow Project name", "URI of Docker image", "MLflow Project entry point command"):
        assert f"{{replaced with {slot}" in template
    assert yaml.safe_load(template)["kind"] == "Job"
    project = yaml.safe_load((folder / "MLproject").read_text())
    assert "docker_env" in project  # the kubernetes backend runs Docker-environment projects only
    entry = project["entry_points"]["sweep"]
    command = entry["command"].format(spec=SAMPLE["SPEC"], n_trials="40")
    command = command.replace("$TUNELOG_STORAGE", SAMPLE["TUNELOG_STORAGE"])
    assert accepted(shlex.split(command))["n_trials"] == 40
