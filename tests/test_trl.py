"""Training scripts as their authors wrote them: TRL's own `trl/scripts/sft.py` (from the pinned wheel)
with the two lines the README asks for, run with TRL's and transformers' defaults left on (tqdm bars,
`--report_to mlflow`), alone, under `torchrun` with two CPU processes, and swept with a median pruner;
and a Trainer script written like transformers' `run_clm.py` (no callback) swept by the command trainer.
The model is a tiny Llama saved to a folder, the data two JSONL files: nothing from a hub."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState

from conftest import REPO, run_cli, subprocess_env
from tunelog import tracking as t
from tunelog.sweep import default_storage, open_storage

trl = pytest.importorskip("trl", reason="trl is a test extra (pip install -e '.[dev]')")
SFT = Path(trl.__file__).parent / "scripts" / "sft.py"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """A tiny Llama with the demo's tokenizer saved as a model folder, 64 + 16 texts as JSONL, and TRL's
    sft.py with `from tunelog import TunelogCallback` and `callbacks=[TunelogCallback()]` added."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("trl")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(REPO / "examples/demo/tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    lines = [x for x in (REPO / "examples/demo/data/general/train.txt").read_text().splitlines() if x.strip()]
    (root / "data").mkdir()
    for split, part in (("train", lines[:64]), ("test", lines[64:80])):
        (root / "data" / f"{split}.jsonl").write_text("".join(json.dumps({"text": x}) + "\n" for x in part))
    source = SFT.read_text()
    patched = source.replace("import argparse\n", "import argparse\n\nfrom tunelog import TunelogCallback\n", 1)
    patched = patched.replace(
        "        peft_config=get_peft_config(model_args),\n    )",
        "        peft_config=get_peft_config(model_args),\n        callbacks=[TunelogCallback()],\n    )",
        1,
    )
    assert patched.count("TunelogCallback") == 2, "TRL's sft.py changed: the two README lines no longer fit it"
    (root / "sft.py").write_text(patched)
    return root


def sft_args(assets: Path, output_dir: str, max_steps: int = 6) -> list[str]:
    """TRL's flags as its docstring shows them, small; tqdm and report_to left at what users have."""
    return [
        "--model_name_or_path", str(assets / "model"), "--dataset_name", str(assets / "data"),
        "--output_dir", output_dir, "--max_steps", str(max_steps), "--per_device_train_batch_size", "4",
        "--eval_strategy", "steps", "--eval_steps", "2", "--logging_steps", "1", "--max_length", "64",
        "--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj",
        "--report_to", "mlflow", "--use_cpu", "--bf16", "false",
    ]  # fmt: skip


def env_for(store: str, **extra: str) -> dict[str, str]:
    return {**subprocess_env(store), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **extra}


def every_run(client: MlflowClient) -> list:
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def run(argv: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_trls_sft_script_alone_is_one_run_with_the_trainers_own_values(assets, store, tmp_path):
    env = env_for(store, MLFLOW_EXPERIMENT_NAME="alone")
    proc = run(
        [sys.executable, str(assets / "sft.py"), *sft_args(assets, str(tmp_path / "out")), "--run_name", "first"],
        env,
        tmp_path,
    )
    assert "it/s]" in proc.stderr + proc.stdout  # tqdm's bars were on
    client = MlflowClient(store)
    (only,) = every_run(client)  # HF's MLflowCallback opened none of its own
    tags, params = only.data.tags, only.data.params
    assert (tags[t.TAG_OUTCOME], only.info.status, only.info.run_name) == ("ok", "FINISHED", "first")
    # what the Trainer used: TRL's linear schedule and seed 42, the flags' target modules; not tunelog's defaults
    assert params["train.schedule"] == "linear" and params["train.seed"] == "42"
    assert params["lora.target_modules"] == "q_proj,v_proj" and params["train.precision"] == "fp32"
    epochs = [m.step for m in client.get_metric_history(only.info.run_id, "train/epoch")]
    assert epochs == sorted(set(epochs)) == list(range(1, 7))  # one point a step
    assert t.SCORE_METRIC in only.data.metrics and only.data.metrics[t.SCORE_METRIC] == only.data.metrics["eval/loss"]
    assert only.inputs.dataset_inputs  # the datasets it trained and evaluated on


def test_under_torchrun_with_two_processes_only_the_main_one_records(assets, store, tmp_path):
    env = env_for(store, MLFLOW_EXPERIMENT_NAME="ddp", OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    torchrun([*argv, str(assets / "sft.py"), *sft_args(assets, str(tmp_path / "out"), max_steps=4)], env, tmp_path)
    client = MlflowClient(store)
    (only,) = every_run(client)
    assert only.data.tags[t.TAG_OUTCOME] == "ok" and only.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(only.info.run_id, "train/loss")]
    assert steps == [1, 2, 3, 4]  # each step once, not once per rank
    models = client.search_logged_models([only.info.experiment_id])
    assert len(models) == 1


# TRL's sft.py ends with this line once every rank has trained and saved
SAVED = "Model saved to"


def torchrun(argv: list[str], env: dict, cwd: Path, after_saved_s: float = 30) -> None:
    """Runs torchrun to its end. One thing is waited on differently: on CPU (gloo), a rank that frees the DDP
    model at exit can deadlock in ProcessGroupGloo's destructor (its worker thread waits for the GIL the
    freeing thread holds). It happens to TRL's sft.py without tunelog too, about one run in three under
    load (torch 2.13), after the script printed its last line. So once that line is out and torchrun has not
    ended `after_saved_s` later, its process group is stopped and the store is what the test reads."""

    log = cwd / "torchrun.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    saved_at, deadline, stopped = None, time.monotonic() + 900, False
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
            if saved_at is None and SAVED in log.read_text(errors="replace"):
                saved_at = time.monotonic()
            if saved_at is not None and time.monotonic() - saved_at > after_saved_s:
                break
    finally:
        if proc.poll() is None:
            stopped = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text(errors="replace")
    assert SAVED in text and (stopped or proc.returncode == 0), text[-3000:]


def free_port() -> int:
    """A port nobody listens on now (torchrun's `--master_port 0` leaves the ranks waiting for each other)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sweep_spec(assets: Path, tmp_path: Path, argv: list[str], metric: str, configs: dict) -> Path:
    raw = {
        "model": {"name": str(assets / "model")},
        "data": {"train": str(assets / "data" / "train.jsonl")},
        "tracking": {"experiment": "trl-sweep", "metric": metric},
        "trainer": {"type": "command", "argv": argv, "cwd": str(assets)},
        "configs": configs,
        "search": {
            "study": "trl-sweep",
            "n_trials": len(configs),
            "sampler": "random",
            "pruner": {"type": "median", "startup_trials": 2},
            "params": {"train.learning_rate": {"type": "float", "min": 1e-6, "max": 3e-2, "log": True}},
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


LEARNING_RATES = {  # named configs run first, in this order: two that learn, then two that barely move
    "fast": {"overrides": {"train.learning_rate": 3e-2}},
    "faster": {"overrides": {"train.learning_rate": 2e-2}},
    "crawl": {"overrides": {"train.learning_rate": 1e-6}},
    "still": {"overrides": {"train.learning_rate": 2e-6}},
}


def test_a_sweep_over_trls_script_prunes_through_the_callback_and_the_study_agrees_with_the_runs(
    assets, store, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    args = sft_args(assets, "{output_dir}", max_steps=8)
    args[args.index("--lora_r") + 1] = "{lora.r}"
    argv = ["{python}", "sft.py", *args, "--learning_rate", "{train.learning_rate}"]
    path = sweep_spec(assets, tmp_path, argv, "eval/loss", LEARNING_RATES)
    proc = run_cli("sweep", path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(store)
    runs = every_run(client)
    assert sorted(r.data.tags[t.TAG_KIND] for r in runs) == ["sweep", "trial", "trial", "trial", "trial"]
    trials = {r.data.tags[t.TAG_TRIAL]: r for r in runs if r.data.tags[t.TAG_KIND] == "trial"}
    study = optuna.load_study(study_name="trl-sweep", storage=open_storage(default_storage(store)))
    states = {"ok": TrialState.COMPLETE, "pruned": TrialState.PRUNED}
    for trial in study.trials:  # the study's record and each run's outcome say the same, and so does the console
        outcome = trials[str(trial.number)].data.tags[t.TAG_OUTCOME]
        assert states.get(outcome, TrialState.FAIL) == trial.state, (trial.number, outcome, trial.state)
        assert f"trial {trial.number}/4: {outcome}" in proc.stdout
    pruned = [r for r in trials.values() if r.data.tags[t.TAG_OUTCOME] == "pruned"]
    assert pruned, {n: r.data.tags[t.TAG_REASON] for n, r in trials.items()}
    for trial in pruned:  # stopped early by the callback, and nothing of it uploaded
        assert max(m.step for m in client.get_metric_history(trial.info.run_id, "train/loss")) < 8
        assert not client.list_artifacts(trial.info.run_id, "outputs")
    done = [r for r in trials.values() if r.data.tags[t.TAG_OUTCOME] == "ok"]
    best = min(done, key=lambda r: r.data.metrics["eval/loss"])
    assert study.best_trial.number == int(best.data.tags[t.TAG_TRIAL]) and best.data.tags.get(t.TAG_BEST) == "true"
    for trial in trials.values():  # the Trainer's values, not the spec's defaults
        assert (
            trial.data.params["train.schedule"] == "linear"
            and trial.data.params["lora.target_modules"] == "q_proj,v_proj"
        )


CLM_SCRIPT = '''
"""Written the way transformers' examples/pytorch/language-modeling/run_clm.py is: Trainer with its
defaults (tqdm bars, INFO logging of the config), no tunelog in it; the whole model saved at the end,
then a final evaluate() whose eval_* numbers come after training."""
import argparse, json, logging, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, DataCollatorForLanguageModeling
from transformers.utils import logging as hf_logging

logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO, stream=sys.stdout)
hf_logging.set_verbosity_info()
p = argparse.ArgumentParser()
p.add_argument("--model"); p.add_argument("--data"); p.add_argument("--output_dir"); p.add_argument("--learning_rate", type=float)
p.add_argument("--raise_at", type=int, default=0)
a = p.parse_args()
tok = AutoTokenizer.from_pretrained(a.model)
model = AutoModelForCausalLM.from_pretrained(a.model)
def load(split):
    texts = [json.loads(x)["text"] for x in open(f"{a.data}/{split}.jsonl")]
    return [tok(x, truncation=True, max_length=32) for x in texts]
class Boom(__import__("transformers").TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if a.raise_at and state.global_step == a.raise_at:
            raise RuntimeError(f"CUDA-free failure at step {state.global_step}: bad batch")
args = TrainingArguments(output_dir=a.output_dir, learning_rate=a.learning_rate, max_steps=8, per_device_train_batch_size=4,
    eval_strategy="steps", eval_steps=2, logging_steps=2, report_to=["mlflow"], use_cpu=True, save_strategy="no")
trainer = Trainer(model=model, args=args, train_dataset=load("train"), eval_dataset=load("test"),
    data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[Boom()])
trainer.train()
trainer.save_model()
metrics = trainer.evaluate()
metrics["eval_accuracy"] = 0.81
trainer.log_metrics("eval", metrics)
print(metrics)
'''


def test_an_unmodified_trainer_script_under_a_sweep_reads_its_steps_and_prunes_only_on_the_headline(
    assets, store, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (assets / "run_clm.py").write_text(CLM_SCRIPT)
    argv = ["{python}", "run_clm.py", "--model", str(assets / "model"), "--data", str(assets / "data"),
            "--output_dir", "{output_dir}", "--learning_rate", "{train.learning_rate}"]  # fmt: skip
    configs = {k: v for k, v in LEARNING_RATES.items() if k != "still"}
    proc = run_cli("sweep", sweep_spec(assets, tmp_path, argv, "eval_loss", configs))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(store)
    runs = every_run(client)
    assert sorted(r.data.tags[t.TAG_KIND] for r in runs) == ["sweep", "trial", "trial", "trial"]  # nothing in Default
    for trial in (r for r in runs if r.data.tags[t.TAG_KIND] == "trial"):
        steps = [m.step for m in client.get_metric_history(trial.info.run_id, "loss")]
        # one point per Trainer log (logging_steps=2 over 8 steps: 4), read from transformers 5's string values
        finished = trial.data.tags[t.TAG_OUTCOME] == "ok"
        assert steps == sorted(set(steps)) and (len(steps) == 4 if finished else 1 <= len(steps) < 4), steps
        assert not any(k in trial.data.metrics for k in ("hidden_size", "bos_token_id", "vocab_size"))
        assert trial.data.tags[t.TAG_OUTCOME] in ("ok", "pruned")
        if trial.data.tags[t.TAG_OUTCOME] == "pruned":  # during training, on the headline only
            assert "eval_loss" in trial.data.tags[t.TAG_REASON] and "eval_accuracy" not in trial.data.tags[t.TAG_REASON]
        uploaded = {a.path for a in client.list_artifacts(trial.info.run_id, "outputs")}
        assert "outputs/model.safetensors" not in uploaded  # a whole model is never taken by a wildcard


def test_a_script_that_raises_at_step_5_says_its_exception_in_the_run_and_on_the_console(
    assets, store, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (assets / "run_clm.py").write_text(CLM_SCRIPT)
    argv = ["{python}", "run_clm.py", "--model", str(assets / "model"), "--data", str(assets / "data"),
            "--output_dir", "{output_dir}", "--learning_rate", "{train.learning_rate}", "--raise_at", "5"]  # fmt: skip
    proc = run_cli("sweep", sweep_spec(assets, tmp_path, argv, "eval_loss", {"fast": LEARNING_RATES["fast"]}))
    assert proc.returncode == 3  # no trial completed
    said = "RuntimeError: CUDA-free failure at step 5: bad batch"
    (trial,) = [r for r in every_run(MlflowClient(store)) if r.data.tags[t.TAG_KIND] == "trial"]
    assert trial.data.tags[t.TAG_OUTCOME] == "failed" and said in trial.data.tags[t.TAG_REASON]
    assert said in proc.stdout and said in proc.stderr  # the trial's line, then the first failure's tail
