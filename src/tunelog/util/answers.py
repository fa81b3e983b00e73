"""What a model answers: the samples before and after training, and the served champion, one code path.

Why one: `samples.md` shows what the fine-tune changed (the same prompts answered before and after,
greedy, so a rerun says the same), and the MLflow model `promote` registers must answer a user's
question the way `samples.md` says it does. Both go through `generate`: the tokenizer's chat template
where it has one, the answer without the prompt, greedy unless a temperature is asked for.
"""

from __future__ import annotations

from typing import Union

import torch

ARTIFACT = "samples.md"
ANSWER_TOKENS = 40  # what samples.md answers with, and the served model's default

Prompt = Union[str, list[dict]]  # a question, or a chat (a list of {"role", "content"} messages)


def generate(
    model,
    tokenizer,
    prompts: list[Prompt],
    device: torch.device,
    max_new_tokens: int = ANSWER_TOKENS,
    temperature: float = 0.0,
) -> list[str]:
    """One answer per prompt: a question is the user's turn of a chat; greedy at temperature 0."""
    answers = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for prompt in prompts:
            ids = _prompt_ids(tokenizer, prompt).to(device)
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
            answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    model.train(was_training)
    return answers


def _prompt_ids(tokenizer, prompt: Prompt) -> torch.Tensor:
    """The prompt's token ids, opening the assistant's turn: through the chat template where the tokenizer
    has one; a model without one continues the text (a chat's messages joined, one per line)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        return ids if torch.is_tensor(ids) else ids["input_ids"]
    text = "\n".join(str(m.get("content", "")) for m in messages)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    if ids.shape[1] > 1 and ids[0, -1].item() == tokenizer.eos_token_id:  # a tokenizer that ends every text
        ids = ids[:, :-1]  # the text goes on: an end-of-text mark would ask for a new one
    return ids


def markdown(prompts: list[str], before: list[str], after: list[str], step: int) -> str:
    """The side-by-side record: each prompt, the base model's answer and the trained one's."""
    lines = [f"# Samples: before training and after step {step} (greedy)", ""]
    for prompt, old, new in zip(prompts, before, after):
        lines += [f"## {prompt}", "", "**before:**", "", _quoted(old), "", f"**after ({step} steps):**", ""]
        lines += [_quoted(new), ""]
    return "\n".join(lines)


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" for line in (text or "(nothing)").splitlines())


def read_samples(text: str) -> dict[str, str]:
    """`samples.md` back as {prompt: the trained model's answer}: what a served champion should say."""
    out = {}
    for section in text.split("\n## ")[1:]:
        prompt, _, rest = section.partition("\n")
        after = rest.split("**after", 1)[1].split(":**", 1)[1]
        quoted = [
            line[2:] if line.startswith("> ") else line[1:] for line in after.splitlines() if line.startswith(">")
        ]
        answer = "\n".join(quoted)
        out[prompt.strip()] = "" if answer == "(nothing)" else answer
    return out
