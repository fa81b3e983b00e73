"""The MLflow model of a trained adapter: what `mlflow.pyfunc.load_model` and `mlflow models serve` run.

MLflow executes this file when it loads the model (MLflow's "models from code": no pickled object).
It opens the base the adapter was trained on (`model_config["base"]`: a folder or a hub id) in the dtype
it trained in, applies the adapter and tokenizer kept in the model's `adapter` artifact, and answers
through `tunelog.util.answers.generate`, the code that wrote the run's `samples.md`: the chat template,
greedy by default, the answer without the prompt. So a served champion says what `samples.md` says.

Accepted: a list of questions (`{"inputs": ["..."]}`; each answered as the user's turn), a list of chats
(each a list of `{"role", "content"}`), or a chat payload (`{"messages": [...]}`, answered as an OpenAI-style
chat completion). Params: `max_new_tokens`, `temperature` (0: greedy).
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class AdapterAnswers(PythonModel):
    """A peft adapter on its base, answering prompts the way the run's `samples.md` did."""

    # questions, chats and chat payloads alike (the signature's inputs are None): MLflow's type-hint
    # validation would warn at this class statement that `predict` has no hints to validate with
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        import torch
        import transformers

        from tunelog.util.answers import ANSWER_TOKENS
        from tunelog.util.quiet import import_peft, no_loading_bars, quiet_libraries

        quiet_libraries()
        no_loading_bars()
        import_peft(needs_bitsandbytes=False)  # the base loads unquantized: no bitsandbytes notice, 4 s less
        from peft import PeftModel

        config = context.model_config or {}
        adapter = context.artifacts["adapter"]
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = getattr(torch, str(config.get("dtype", "float32")), torch.float32)
        base = transformers.AutoModelForCausalLM.from_pretrained(config["base"], dtype=dtype)
        self.model = PeftModel.from_pretrained(base, adapter).to(self.device).eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(adapter)
        self.max_new_tokens = int(config.get("max_new_tokens", ANSWER_TOKENS))

    def predict(self, context, model_input, params=None):
        from tunelog.util.answers import generate

        params = params or {}
        tokens = int(params.get("max_new_tokens") or self.max_new_tokens)
        temperature = float(params.get("temperature") or 0.0)
        if isinstance(model_input, dict) and "messages" in model_input:  # a chat payload
            (answer,) = generate(
                self.model, self.tokenizer, [model_input["messages"]], self.device, tokens, temperature
            )
            return _chat_completion(answer)
        return generate(self.model, self.tokenizer, _prompts(model_input), self.device, tokens, temperature)


def _prompts(model_input: Any) -> list:
    """Questions or chats out of whatever shape MLflow passes: a list, a NumPy array, a DataFrame, a string."""
    if hasattr(model_input, "iloc"):  # a DataFrame: its first column
        model_input = model_input.iloc[:, 0]
    if hasattr(model_input, "tolist"):
        model_input = model_input.tolist()
    if isinstance(model_input, str):
        return [model_input]
    return [item if isinstance(item, (str, list)) else str(item) for item in model_input]


def _chat_completion(answer: str) -> dict:
    """The answer in the OpenAI chat-completion shape that MLflow's chat payloads expect back."""
    message = {"role": "assistant", "content": answer}
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


mlflow.models.set_model(AdapterAnswers())
