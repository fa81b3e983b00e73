"""TEST DATA: MLflow experiments as the world logs them, made with the real integrations (no tunelog tag anywhere):

- `native`: three transformers `Trainer` runs with `report_to="mlflow"` (its own MLflowCallback), a peft LoRA on a
  tiny Llama from a config, `eval_strategy="steps"`: `base` (lr 1e-3, r 4), `lr1e-2` (lr 1e-2, r 4), `r16`
  (lr 1e-2, r 16: a change MLflowCallback does not log, worth 1.5% of eval_loss here); `base` logs its
  checkpoints (`HF_MLFLOW_LOG_ARTIFACTS=1`).
- `trl`: one TRL `SFTTrainer` run (`report_to="mlflow"`).
- `lightning`: two Lightning runs through `MLFlowLogger` (`train_loss`, `val_loss`, `save_hyperparameters()`).
- `study`: optuna-integration's `MLflowCallback` on a real study whose objective prunes the worse trials.
- `loop`: a hand-written loop: a parent run with nested children (`log_params`, `val_loss` by step), one whose
  loss went NaN, one that crashed and closed FAILED.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

LORA = ["q_proj", "v_proj"]


class Pattern(torch.utils.data.Dataset):
    """Token sequences a model learns in a few steps (random ones teach nothing: every run ends alike)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        ids = torch.tensor([(i + k) % 8 + 10 for k in range(16)])
        return {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}


DEMO = Path(__file__).resolve().parent.parent / "examples/demo"


def demo_tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(DEMO / "tokenizer.json"), bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>",
    )  # fmt: skip


def tiny_base(folder: Path) -> Path:
    """A tiny Llama saved as a model folder (its adapters name it as their base, as a hub id would be)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = folder / "tiny-base"
    if not path.is_dir():
        tok = demo_tokenizer()
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=64, pad_token_id=tok.pad_token_id,
        )  # fmt: skip
        LlamaForCausalLM(config).save_pretrained(path)
        tok.save_pretrained(path)
    return path


def tiny_peft(folder: Path, r: int):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(tiny_base(folder))
    return get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules=LORA))


def trainer_runs(folder: Path) -> None:
    """`native`: what `report_to="mlflow"` leaves, three runs differing in LR and (unlogged) rank."""
    import mlflow
    from transformers import Trainer, TrainingArguments

    mlflow.set_experiment("native")
    for name, lr, r in (("base", 1e-3, 4), ("lr1e-2", 1e-2, 4), ("r16", 1e-2, 16)):
        # the first run logs its checkpoints (two of them: promote must take the newest); the others save nothing
        logged = name == "base"
        os.environ["HF_MLFLOW_LOG_ARTIFACTS"] = "1" if logged else "0"
        args = TrainingArguments(
            output_dir=str(folder / "out" / name), run_name=name, max_steps=4, per_device_train_batch_size=4,
            learning_rate=lr, logging_steps=1, eval_strategy="steps", eval_steps=2, save_steps=2,
            save_strategy="steps" if logged else "no", report_to=["mlflow"], use_cpu=True, disable_tqdm=True,
            dataloader_num_workers=0, seed=0,
        )  # fmt: skip
        trainer = Trainer(
            model=tiny_peft(folder, r), args=args, train_dataset=Pattern(32), eval_dataset=Pattern(8),
            processing_class=demo_tokenizer(),
        )  # fmt: skip
        trainer.train()
        mlflow.end_run()
    os.environ.pop("HF_MLFLOW_LOG_ARTIFACTS", None)


def trl_run(folder: Path) -> None:
    """`trl`: TRL's SFTTrainer with its defaults and `report_to="mlflow"`."""
    import mlflow
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    mlflow.set_experiment("trl")
    demo = DEMO
    tok = demo_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    )  # fmt: skip
    lines = [s for s in (demo / "data/general/train.txt").read_text().splitlines() if s.strip()][:40]
    args = SFTConfig(
        output_dir=str(folder / "out" / "sft"), run_name="sft", max_steps=4, per_device_train_batch_size=4,
        logging_steps=1, eval_strategy="steps", eval_steps=2, report_to=["mlflow"], use_cpu=True,
        disable_tqdm=True, max_length=32, save_strategy="no",
    )  # fmt: skip
    data = Dataset.from_dict({"text": lines})
    SFTTrainer(model=model, args=args, train_dataset=data, eval_dataset=data.select(range(8)),
               processing_class=tok).train()  # fmt: skip
    mlflow.end_run()


def lightning_runs(uri: str, folder: Path) -> None:
    """`lightning`: two runs of a small regression through MLFlowLogger, differing in their learning rate."""
    import lightning as L
    from lightning.pytorch.loggers import MLFlowLogger

    class Small(L.LightningModule):
        def __init__(self, lr: float = 0.01, hidden: int = 8):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
    for lr in (0.001, 0.05):
        logger = MLFlowLogger(experiment_name="lightning", tracking_uri=uri, run_name=f"lr{lr}")
        trainer = L.Trainer(
            max_epochs=3, logger=logger, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, accelerator="cpu", default_root_dir=str(folder / "pl"), log_every_n_steps=1,
        )  # fmt: skip
        loader = torch.utils.data.DataLoader(data, batch_size=16)
        trainer.fit(Small(lr=lr), loader, loader)


def optuna_study(uri: str) -> None:
    """`study`: optuna-integration's MLflowCallback on a study whose median pruner stops the worse trials."""
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -4.0, 4.0)
        for step in range(5):
            value = (x - 1.0) ** 2 + 1.0 / (step + 1)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    study = optuna.create_study(
        study_name="study", direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )  # fmt: skip
    study.optimize(objective, n_trials=10, callbacks=[MLflowCallback(tracking_uri=uri, metric_name="value")])


def hand_loop() -> None:
    """`loop`: a parent run with nested children, as a hand-written sweep logs it."""
    import mlflow

    mlflow.set_experiment("loop")
    with mlflow.start_run(run_name="grid"):
        mlflow.log_param("grid", "lr x dropout")
        for name, lr in (("a", 0.01), ("b", 0.1), ("nan", 10.0)):
            with mlflow.start_run(run_name=name, nested=True):
                mlflow.log_params({"lr": lr, "dropout": 0.1, "output_dir": f"/data/runs/{name}"})
                for step in range(1, 4):
                    loss = float("nan") if name == "nan" and step == 3 else 1.0 / (lr * 10 * step + 1)
                    mlflow.log_metric("val_loss", loss, step=step)
        try:
            with mlflow.start_run(run_name="crash", nested=True):
                mlflow.log_params({"lr": 0.05, "dropout": 0.1, "output_dir": "/data/runs/crash"})
                mlflow.log_metric("val_loss", 0.5, step=1)
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
        except RuntimeError:
            pass


def build_world(uri: str, folder: Path) -> None:
    """Every experiment above into the store at `uri` (MLFLOW_TRACKING_URI must name it)."""
    trainer_runs(folder)
    trl_run(folder)
    lightning_runs(uri, folder)
    optuna_study(uri)
    hand_loop()
