"""A plain Hugging Face `Trainer` script with a LoRA adapter (peft), made a tunelog run by one line:
`callbacks=[TunelogCallback()]`. The model is the demo's tiny Llama built from a config (nothing is
downloaded); put your own `from_pretrained` in its place.

    python examples/hf_trainer/train.py --max_steps 30          # alone: one tunelog run
    tunelog sweep examples/hf_trainer/spec.yaml                  # each trial runs this script

`report_to=["mlflow"]` stays as most scripts have it: the callback takes HF's MLflowCallback out, so
there is one run, not two.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Trainer, TrainingArguments

from tunelog import TunelogCallback

DEMO = Path(__file__).resolve().parent.parent / "demo"


class Lines(torch.utils.data.Dataset):
    """One text line a sample, padded to `length` tokens (padding left out of the loss)."""

    def __init__(self, path: Path, tokenizer, length: int = 32, limit: int = 256):
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:limit]
        self.encoded = tokenizer(lines, truncation=True, max_length=length, padding="max_length", return_tensors="pt")

    def __len__(self) -> int:
        return len(self.encoded["input_ids"])

    def __getitem__(self, i):
        ids, mask = self.encoded["input_ids"][i], self.encoded["attention_mask"][i]
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def build(lora_r: int):
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(DEMO / "tokenizer.json"),
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
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return tokenizer, get_peft_model(LlamaForCausalLM(config), lora)


def main(argv=None, trainer_class=Trainer) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learning_rate", type=float, default=5e-3)
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--eval_steps", type=int, default=10)
    parser.add_argument("--output_dir", default="outputs/hf_trainer")
    parser.add_argument("--report_to", default="mlflow")
    args = parser.parse_args(argv)
    tokenizer, model = build(args.lora_r)
    training = TrainingArguments(
        output_dir=args.output_dir,
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=16,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        logging_steps=2,
        save_strategy="no",
        report_to=[args.report_to] if args.report_to != "none" else "none",
        use_cpu=not torch.cuda.is_available(),
        seed=0,
    )
    trainer = trainer_class(
        model=model,
        args=training,
        train_dataset=Lines(DEMO / "data/general/train.txt", tokenizer),
        eval_dataset=Lines(DEMO / "data/general/eval.txt", tokenizer, limit=64),
        processing_class=tokenizer,
        callbacks=[TunelogCallback()],
    )
    trainer.train()


if __name__ == "__main__":
    main()
