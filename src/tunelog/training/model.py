"""Base model, tokenizer and LoRA adapter, from the spec's `model` and `lora` sections.

A GPU is the design centre (bf16, 4-bit/8-bit base weights through
bitsandbytes); the CPU is the fallback, and asking it for 4-bit is a clear error.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import MachineError, SpecError
from ..spec import Spec, flatten, is_uri
from ..util.quiet import import_peft, no_loading_bars
from .model_source import cache_dir, pretrained_path

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(spec: Spec, saved: Optional[Path] = None):
    """The tokenizer: the copy saved beside an adapter when given (a run loaded on another machine or from
    another folder has no access to the training machine's paths), else a tokenizer.json (or folder) for
    the tiny model, else the model's own."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if saved is not None and (Path(saved) / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(saved))
    elif spec.model.tokenizer:
        path = spec.path(spec.model.tokenizer)
        if path.is_dir():
            tok = AutoTokenizer.from_pretrained(str(path))
        else:
            tok = PreTrainedTokenizerFast(
                tokenizer_file=str(path), bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
            )
    else:
        tok = AutoTokenizer.from_pretrained(pretrained_path(spec))
    if tok.pad_token is None:  # most causal LMs ship without one; padding is masked out of the loss anyway
        tok.pad_token = tok.eos_token
    return tok


def check_machine(spec: Spec, device: torch.device) -> None:
    """Refuse, before anything is loaded, what this device cannot do: 4/8-bit or fp16 without CUDA."""
    quantized = spec.model.load_in_4bit or spec.model.load_in_8bit
    if quantized and device.type != "cuda":
        field = "model.load_in_4bit" if spec.model.load_in_4bit else "model.load_in_8bit"
        raise MachineError(
            f"{spec.source}: {field}: bitsandbytes quantized loading needs a CUDA GPU and none "
            f"was found; set {field}: false to train in full precision on this machine"
        )
    precision = spec.train.precision
    if precision == "fp16" and device.type != "cuda":
        raise MachineError(f"{spec.source}: train.precision: fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MachineError(f"{spec.source}: train.precision: this GPU has no bf16; use fp16 or fp32")


def _quantization_config(spec: Spec, device: torch.device):
    if not (spec.model.load_in_4bit or spec.model.load_in_8bit):
        return None
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if spec.model.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def _tiny_model(spec: Spec, tokenizer) -> torch.nn.Module:
    """The demo's Llama-style model, built from a config with a fixed init seed (no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = spec.model.tiny
    assert tiny is not None
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        max_position_embeddings=tiny.max_position,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(tiny.init_seed)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(state)
    return model


def base_reference(spec: Spec, tokenizer) -> Optional[str]:
    """What an adapter's MLflow model names as its base: a local folder or a hub id (the tiny demo model
    saved once as a folder, so it has one). None for an adapter on top of merged earlier stages, whose
    foundation exists in no folder: such a run keeps its plain `adapter/` artifact."""
    if spec.model.adapter and spec.model.adapter_init == "merge":
        return None
    if spec.model.tiny is not None:
        return str(_saved_tiny(spec, tokenizer))
    return pretrained_path(spec)  # a local folder's path, else the hub id


def _saved_tiny(spec: Spec, tokenizer) -> Path:
    """The tiny model's initial weights as a model folder, built once per config and tokenizer (1.5 MB for the
    demo): it is what every LoRA on it starts from, since the init seed is part of the config."""
    import hashlib
    import json
    import tempfile

    assert spec.model.tiny is not None
    digest = hashlib.sha256(json.dumps(spec.model.tiny.model_dump(), sort_keys=True).encode())
    digest.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    folder = cache_dir() / "bases" / f"tiny-{digest.hexdigest()[:16]}"
    if not (folder / "config.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".building-"))
        _tiny_model(spec, tokenizer).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, folder)  # atomic: another process building the same folder loses the race
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_base_model(spec: Spec, tokenizer, device: torch.device) -> torch.nn.Module:
    if spec.model.tiny is not None:
        return _tiny_model(spec, tokenizer).to(device)
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if spec.model.dtype != "auto":
        kwargs["dtype"] = _DTYPES[spec.model.dtype]
    quant = _quantization_config(spec, device)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device.index or 0}
    no_loading_bars()
    model = AutoModelForCausalLM.from_pretrained(pretrained_path(spec), **kwargs)
    return model if quant is not None else model.to(device)


def quantized(spec: Spec) -> bool:
    """Whether any run of this spec may load 4/8-bit weights (its own setting, a named config, a searched param)."""
    if spec.model.load_in_4bit or spec.model.load_in_8bit:
        return True
    keys = set(spec.search.params) if spec.search else set()
    for preset in spec.configs.values():
        keys |= set(flatten(preset.overrides))
    return any(k.startswith(("model.load_in_4bit", "model.load_in_8bit")) for k in keys)


def _peft(spec: Spec) -> None:
    import_peft(needs_bitsandbytes=quantized(spec))


def target_modules(spec: Spec, model: torch.nn.Module) -> list[str] | str:
    """`auto`: peft's default for the architecture (q/v projections for Llama), else every linear layer."""
    if spec.lora.target_modules != "auto":
        return spec.lora.target_modules
    _peft(spec)
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type, "all-linear")


def add_lora(spec: Spec, model: torch.nn.Module) -> torch.nn.Module:
    """Wrap the base model with a fresh LoRA adapter; only the adapter trains."""
    _peft(spec)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if spec.model.load_in_4bit or spec.model.load_in_8bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.model.gradient_checkpointing)
    elif spec.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    config = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=target_modules(spec, model),
        bias=spec.lora.bias,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # e.g. a target module name that matches nothing in the model
        raise SpecError(spec.source, [("lora.target_modules", str(exc).splitlines()[0])]) from None


# resolve(adapter reference) -> (local adapter folder, spec of the run that trained it or None)
AdapterResolver = Callable[[str], "tuple[Path, Optional[Spec]]"]


def local_adapter(spec: Spec) -> AdapterResolver:
    """A resolver for plain folders only (no tracking store): the adapter was trained on the plain base."""

    def resolve(ref: str) -> tuple[Path, Optional[Spec]]:
        if is_uri(ref):
            raise SpecError(spec.source, [("model.adapter", f"{ref} needs the tracking store to resolve")])
        return spec.path(ref), None

    return resolve


def foundation(spec: Spec, tokenizer, device: torch.device, resolve: AdapterResolver) -> torch.nn.Module:
    """The model the spec's own adapter sits on: the base, with earlier merged stages folded in.

    `adapter_init: continue` trains the earlier adapter further, so its foundation is the earlier
    run's; `merge` folds the earlier adapter into the weights and starts a fresh one on top.
    """
    if not spec.model.adapter:
        return load_base_model(spec, tokenizer, device)
    _peft(spec)
    from peft import PeftModel

    adapter_dir, earlier = resolve(spec.model.adapter)
    below = foundation(earlier, tokenizer, device, resolve) if earlier else load_base_model(spec, tokenizer, device)
    if spec.model.adapter_init == "continue":
        return below
    return PeftModel.from_pretrained(below, str(adapter_dir)).merge_and_unload()


def with_trained_adapter(
    spec: Spec, adapter_dir: Path, tokenizer, device: torch.device, resolve: AdapterResolver
) -> torch.nn.Module:
    """A run's result: its foundation with the adapter it saved, ready to evaluate or generate."""
    _peft(spec)
    from peft import PeftModel

    model = PeftModel.from_pretrained(foundation(spec, tokenizer, device, resolve), str(adapter_dir))
    return model.to(device).eval()


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any
    device: torch.device


def load_for_training(
    spec: Spec, device: torch.device | None = None, resolve: AdapterResolver | None = None
) -> LoadedModel:
    """Tokenizer and trainable model: a fresh LoRA adapter, or the spec's earlier one to continue."""
    device = device or pick_device()
    check_machine(spec, device)
    tokenizer = load_tokenizer(spec)
    resolve = resolve or local_adapter(spec)
    base = foundation(spec, tokenizer, device, resolve)
    if spec.model.adapter and spec.model.adapter_init == "continue":
        _peft(spec)
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(resolve(spec.model.adapter)[0]), is_trainable=True)
    else:
        model = add_lora(spec, base)
    return LoadedModel(model=model, tokenizer=tokenizer, device=device)
