"""Training throughput: samples/s of tunelog's built-in trainer (tracking on, every step
logged) over a plain peft + torch loop with the same model, batch, data and precision.

Both are timed the same way: from the end of step 1 to the end of the last step, so model
loading and the first step's warm-up are left out of both. Target: ratio >= 0.95.
"""

from __future__ import annotations

import statistics
import time

from _common import demo_spec, sized, temp_store, verdict

STEPS, REPEATS = sized((150, 2), (10, 1))


def plain_loop(spec) -> float:
    """The baseline a user would write: transformers + peft + torch.optim, nothing else."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(spec.path(spec.model.tokenizer)),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    t = spec.model.tiny
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=t.hidden_size,
            intermediate_size=t.intermediate_size,
            num_hidden_layers=t.num_layers,
            num_attention_heads=t.num_heads,
            num_key_value_heads=t.num_heads,
            max_position_embeddings=t.max_position,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True,
        )
    )
    model = get_peft_model(
        model,
        LoraConfig(
            r=spec.lora.r,
            lora_alpha=spec.lora.alpha,
            lora_dropout=spec.lora.dropout,
            target_modules=spec.lora.target_modules,
            task_type="CAUSAL_LM",
        ),
    )
    texts = [line.strip() for line in spec.path(spec.data.train).read_text().splitlines() if line.strip()]

    def collate(batch):
        enc = tok(batch, truncation=True, max_length=spec.data.max_length, padding=True, return_tensors="pt")
        enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return enc

    loader = DataLoader(texts, batch_size=spec.train.batch_size, shuffle=True, collate_fn=collate)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.train.learning_rate)
    model.train()
    step, start = 0, 0.0
    while step < STEPS:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.train.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()
            step += 1
            if step == 1:
                start = time.perf_counter()
            if step == STEPS:
                break
    return (STEPS - 1) * spec.train.batch_size / (time.perf_counter() - start)


def tunelog_run(spec, store: str) -> float:
    from mlflow import MlflowClient

    from tunelog.tracking import Tracker
    from tunelog.train import run_training

    run_id, result = run_training(spec, Tracker())
    assert result.outcome == "ok", result.reason
    history = sorted(MlflowClient(store).get_metric_history(run_id, "train/loss"), key=lambda m: m.step)
    seconds = (history[-1].timestamp - history[0].timestamp) / 1000
    return (len(history) - 1) * spec.train.batch_size / seconds


def main() -> None:
    store = temp_store()
    spec = demo_spec(max_steps=STEPS, eval_every=None)
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"eval": None})})
    plain, ours = [], []
    for _ in range(REPEATS):
        plain.append(plain_loop(spec))
        ours.append(tunelog_run(spec, store))
    p, o = statistics.mean(plain), statistics.mean(ours)
    print(f"{STEPS} steps x batch {spec.train.batch_size}, {REPEATS} alternating repeats")
    print(
        f"plain peft+torch: {p:.1f} samples/s {[f'{x:.1f}' for x in plain]}; "
        f"tunelog: {o:.1f} samples/s {[f'{x:.1f}' for x in ours]}"
    )
    print(verdict("train_throughput", o / p, ">=", 0.95))


if __name__ == "__main__":
    main()
