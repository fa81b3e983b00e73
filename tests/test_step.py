"""One training step for the trainer and the probe: what the probe times is what `train` runs."""

import pytest
import torch

from conftest import demo_raw, write_spec
from tunelog.probe import Probe
from tunelog.spec import load_spec
from tunelog.tracking import Tracker
from tunelog.train import run_training
from tunelog.training.step import TrainingStep


@pytest.fixture
def recorded(monkeypatch):
    """Every TrainingStep.step call: (optimizer class, autocast dtype or None, whether it clipped and had EMA)."""
    calls = []
    original = TrainingStep.step

    def spy(self, micro_batches, lr):
        ctx = self.autocast()
        dtype = getattr(ctx, "fast_dtype", None)
        calls.append((type(self.optimizer).__name__, dtype, self.max_norm, self.ema is not None))
        return original(self, micro_batches, lr)

    monkeypatch.setattr(TrainingStep, "step", spy)
    return calls


@pytest.mark.parametrize("optimizer", ["adamw", "adamw8bit", "sgd"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_probe_and_trainer_take_the_same_step(tmp_path, store, recorded, optimizer, precision):
    train = {
        "max_steps": 2,
        "eval_every": None,
        "optimizer": optimizer,
        "precision": precision,
        "max_grad_norm": 0.5,
        "ema_decay": 0.9,
        "learning_rate": 1e-4,
    }
    raw = demo_raw(**train)
    raw["data"]["eval"] = None
    raw["tracking"]["metric"] = "train/final_loss"
    raw["probe"] = {
        "params": {"train.batch_size": {"type": "categorical", "choices": [2]}},
        "max_steps": 2,
        "warmup_steps": 0,
        "min_seconds": 0,
    }
    spec = load_spec(write_spec(tmp_path / "s.yaml", raw))
    _, result = run_training(spec, Tracker())
    trained = list(recorded)
    recorded.clear()
    probe = Probe(spec, Tracker(), echo=lambda s: None)
    probe.measurer.prepare()
    m = probe.measure({"train.batch_size": 2})
    assert result.outcome == "ok" and m.outcome == "ok"
    expected = {"adamw": "AdamW", "adamw8bit": "AdamW8bit", "sgd": "SGD"}[optimizer]
    want_dtype = torch.bfloat16 if precision == "bf16" else None
    assert trained and recorded
    assert set(trained) == set(recorded) == {(expected, want_dtype, 0.5, True)}


def test_a_bf16_step_differs_from_an_fp32_one(tmp_path):
    """Autocast really runs: the same LoRA on the same batch gives a different loss in bf16 than in fp32."""
    from tunelog.training.data import read_texts, tokenize
    from tunelog.training.model import load_for_training

    losses = {}
    for precision in ("fp32", "bf16"):
        spec = load_spec(write_spec(tmp_path / f"{precision}.yaml", demo_raw(precision=precision)))
        torch.manual_seed(0)
        loaded = load_for_training(spec)
        data = tokenize(read_texts(spec, spec.data.train, "data.train")[:4], loaded.tokenizer, 32)
        batch = {k: v.to(loaded.device) for k, v in data.collate([0, 1, 2, 3]).items()}
        losses[precision] = TrainingStep(spec, loaded.model, loaded.device).step([batch], 1e-4).loss
    assert losses["fp32"] != losses["bf16"] and abs(losses["fp32"] - losses["bf16"]) < 0.1
