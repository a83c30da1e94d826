"""The one place that loads models: strong LMs, guides, reward models and classifiers.

Each loader takes a hub id or a local directory, ``dtype``, ``device`` ("auto" picks
CUDA when it is there, else CPU), an optional ``device_map`` (multi-GPU through
accelerate) and optional 4-bit loading (bitsandbytes).
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Union

import torch

from .lm import CausalLM

logger = logging.getLogger(__name__)

__all__ = ["resolve_device", "resolve_dtype", "load_causal_lm", "load_classifier", "load_tokenizer"]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """``"auto"``/None: CUDA when available, else CPU; anything else as torch reads it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='auto' or 'cpu'")
    return dev


def resolve_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """``"auto"``: float32 on CPU, bfloat16 on GPUs that support it (else float16)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


def _check_source(name_or_path: str) -> str:
    """A local path must exist; anything shaped like ``org/name`` is left to the hub."""
    path = os.path.expanduser(str(name_or_path))
    looks_local = os.path.isabs(path) or path.startswith(".") or path.count("/") > 1 or os.path.exists(path)
    if looks_local and not os.path.exists(path):
        raise FileNotFoundError(f"model path {name_or_path!r} does not exist; give an existing directory or a hub id")
    return path if os.path.exists(path) else str(name_or_path)


def load_tokenizer(name_or_path: str, gguf_file: Optional[str] = None, **kwargs):
    from transformers import AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(_check_source(name_or_path), **extra, **kwargs)
    if tok.pad_token_id is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def _load_kwargs(dtype, device, device_map, load_in_4bit, gguf_file) -> tuple[dict, Optional[torch.device]]:
    dev = resolve_device(device) if device_map is None else None
    kwargs = {"dtype": resolve_dtype(dtype, dev or resolve_device("auto"))}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if device_map is not None:
        kwargs["device_map"] = device_map
    if load_in_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ImportError("load_in_4bit needs bitsandbytes: pip install bitsandbytes") from None
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=kwargs["dtype"])
        kwargs.setdefault("device_map", {"": str(dev or resolve_device("auto"))})
        dev = None
    return kwargs, dev


def _load(auto_cls, name_or_path: str, dtype, device, device_map, load_in_4bit: bool, gguf_file: Optional[str]):
    """(model in eval mode on its device, local path or hub id it came from)."""
    source = _check_source(name_or_path)
    kwargs, dev = _load_kwargs(dtype, device, device_map, load_in_4bit, gguf_file)
    model = auto_cls.from_pretrained(source, **kwargs)
    if dev is not None:
        model = model.to(dev)
    model.eval()
    logger.info("loaded %s (%s) on %s", name_or_path, kwargs["dtype"], next(model.parameters()).device)
    return model, source


def load_causal_lm(name_or_path: str, *, dtype="auto", device="auto", device_map=None, load_in_4bit: bool = False,
                   gguf_file: Optional[str] = None, name: Optional[str] = None) -> CausalLM:
    """Load a causal LM and its tokenizer (hub id or local directory) as a :class:`CausalLM`."""
    from transformers import AutoModelForCausalLM

    model, source = _load(AutoModelForCausalLM, name_or_path, dtype, device, device_map, load_in_4bit, gguf_file)
    return CausalLM(model, load_tokenizer(source, gguf_file), name or str(name_or_path))


def load_classifier(name_or_path: str, *, dtype="auto", device="auto", device_map=None, load_in_4bit: bool = False):
    """Load a sequence-classification model (reward model or classifier) and its tokenizer."""
    from transformers import AutoModelForSequenceClassification

    model, source = _load(AutoModelForSequenceClassification, name_or_path, dtype, device, device_map, load_in_4bit,
                          None)
    tok = load_tokenizer(source)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model, tok
