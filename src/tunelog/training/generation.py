"""What the model says before and after training, for the prompts in `data.sample_prompts`.

Why: a loss that falls says little about a chat model; the same prompts answered before and after
the fine-tune (greedy, so a rerun says the same) show what changed. Logged as `samples.md`.
"""

from __future__ import annotations

import torch

ARTIFACT = "samples.md"


def generate(model, tokenizer, prompts: list[str], device: torch.device, max_new_tokens: int = 40) -> list[str]:
    """Greedy answers, one per prompt: through the chat template where the tokenizer has one."""
    answers = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for prompt in prompts:
            if getattr(tokenizer, "chat_template", None):
                ids = tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
                )
                ids = ids if torch.is_tensor(ids) else ids["input_ids"]
            else:
                ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            ids = ids.to(device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    model.train(was_training)
    return answers


def markdown(prompts: list[str], before: list[str], after: list[str], step: int) -> str:
    """The side-by-side record: each prompt, the base model's answer and the trained one's."""
    lines = [f"# Samples: before training and after step {step} (greedy)", ""]
    for prompt, old, new in zip(prompts, before, after):
        lines += [f"## {prompt}", "", "**before:**", "", _quoted(old), "", f"**after ({step} steps):**", ""]
        lines += [_quoted(new), ""]
    return "\n".join(lines)


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" for line in (text or "(nothing)").splitlines())
