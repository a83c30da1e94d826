"""The compute of a run in FLOPs: one formula, from each model's config and parameters.

Per token a transformer's forward pass costs (multiply-add = 2 FLOPs)

    2 * N  +  4 * d_attn * sum over layers of min(c, window_layer)

- ``N``: the parameters that multiply every token's activations: all parameters except the input embedding
  tables (a lookup, no arithmetic), with the output head counted once even where it is tied to the input
  embedding (its matrix product runs for every position fed). For a tied model N is the parameter count.
- ``d_attn``: query heads x head size; ``c``: the positions the token attends to (the real, unmasked positions
  before it in its row, plus itself); a sliding-window layer attends to at most ``window`` of them. 4 =
  2 FLOPs per multiply-add x 2 products (queries x keys, weights x values).

Feeding ``n`` consecutive tokens to a row that holds ``before`` real positions costs
:meth:`ModelShape.flops`\\ ``(n, before)``, exactly the sum of the above over c = before+1 .. before+n.
Padding and holes are not counted (as the token counters count real positions). Normalisation, softmax,
sampling and the rotary embedding are left out (each under 1% of a token's FLOPs here). This is Kaplan et al.
(2020)'s estimate ``2N + 2 n_layer n_ctx d_attn`` with the output head in N and both attention products counted.

A :class:`Cost` is what one model did for one prompt: token positions and FLOPs, for the prefill (the prompt
fed in one pass before the first sampled token; a guide's templated prompt) and for the forward passes that
follow (sampling steps; a guide's response tokens).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, fields
from typing import Iterable, Mapping, Optional

logger = logging.getLogger(__name__)

__all__ = [
    "ModelShape",
    "Cost",
    "shape_of",
    "flops_of",
    "shape_from_config",
    "add_costs",
    "total_flops",
    "costs_to_dict",
    "costs_from_dict",
    "attended",
]


def attended(n: int, before: int, window: Optional[int] = None) -> int:
    """sum of min(c, window) over c = before+1 .. before+n: the keys ``n`` new tokens attend to, in one layer."""
    if n <= 0:
        return 0

    def upto(x: int) -> int:  # sum_{c=1}^{x} min(c, window)
        if window is None or x <= window:
            return x * (x + 1) // 2
        return window * (window + 1) // 2 + window * (x - window)

    return upto(before + n) - upto(before)


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP formula reads of one model (see the module docstring).

    params: all parameters (for reference); matmul_params: N; layers: full-attention layers; sliding_layers and
    window: the sliding-window layers and their window (0 and None without); attention_width: d_attn.
    """

    params: int
    matmul_params: int
    layers: int
    attention_width: int
    sliding_layers: int = 0
    window: Optional[int] = None

    def flops(self, n: int, before: int = 0) -> int:
        """FLOPs of feeding ``n`` consecutive tokens to a row that already holds ``before`` real positions."""
        if n <= 0:
            return 0
        keys = self.layers * attended(n, before) + self.sliding_layers * attended(n, before, self.window)
        return 2 * self.matmul_params * n + 4 * self.attention_width * keys

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "ModelShape":
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in ("params", "matmul_params", "layers", "attention_width") if n not in d)
        if missing:
            raise ValueError(f"a model shape needs {', '.join(missing)}; got {sorted(d)}")
        return cls(**{k: v for k, v in d.items() if k in names})


def _layout(config) -> tuple[int, int, Optional[int], int]:
    """(full layers, sliding layers, window, d_attn) of a transformers config."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    n_layers = _first(text, ("num_hidden_layers", "n_layer", "num_layers"))
    heads = _first(text, ("num_attention_heads", "n_head", "num_heads"))
    hidden = _first(text, ("hidden_size", "n_embd", "d_model"))
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    window = getattr(text, "sliding_window", None)
    types = list(getattr(text, "layer_types", None) or [])
    if types:
        sliding = sum(1 for t in types if t == "sliding_attention")
    else:
        sliding = n_layers if window and getattr(text, "use_sliding_window", True) else 0
    if not sliding:
        window = None
    return n_layers - sliding, sliding, window, heads * head_dim


def _first(cfg, names) -> int:
    for name in names:
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(
        f"the model config ({type(cfg).__name__}) names none of {', '.join(names)}; its FLOPs cannot be estimated"
    )


def _matmul_params(model) -> tuple[int, int]:
    """(all parameters, N) of a torch model: parameters outside embedding tables, plus the output head once when
    its weight is an embedding table's (tied)."""
    import torch

    embedded = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            embedded.update(id(p) for p in module.parameters(recurse=False))
    total = matmul = 0
    seen = set()
    for p in model.parameters():  # shared parameters are listed once
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if id(p) not in embedded:
            matmul += p.numel()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None and id(weight) in embedded:
        matmul += weight.numel()
    return total, matmul


def shape_of(model) -> ModelShape:
    """The :class:`ModelShape` of a loaded transformers model (its config and parameters); remembered per model."""
    shape = getattr(model, "_w2s_shape", None)
    if shape is None:
        total, matmul = _matmul_params(model)
        full, sliding, window, width = _layout(model.config)
        shape = ModelShape(total, matmul, full, width, sliding, window)
        try:
            model._w2s_shape = shape
        except AttributeError:  # pragma: no cover - a model that takes no attributes: recomputed each time
            pass
    return shape


@functools.lru_cache(maxsize=16)
def _shape_of_config_json(text: str, auto: str) -> ModelShape:
    import json

    import torch
    import transformers

    config = transformers.AutoConfig.for_model(**json.loads(text))
    with torch.device("meta"):  # the parameters' shapes only: no memory, no weights
        model = getattr(transformers, auto).from_config(config)
    return shape_of(model)


def shape_from_config(config, auto: str = "AutoModelForCausalLM") -> ModelShape:
    """The :class:`ModelShape` of a model made from ``config`` (a transformers config or its dict) without its
    weights (on the meta device); ``auto``: the transformers auto class that builds it."""
    import json

    d = config if isinstance(config, Mapping) else config.to_dict()
    return _shape_of_config_json(json.dumps(d, sort_keys=True, default=str), auto)


@dataclass
class Cost:
    """Compute of one model for one prompt (see the module docstring). FLOPs are None where the model's shape is
    not known (a strong model behind an endpoint)."""

    prefill_tokens: int = 0
    prefill_flops: Optional[int] = 0
    forward_tokens: int = 0
    forward_flops: Optional[int] = 0

    def add_prefill(self, n: int, flops: Optional[int]) -> None:
        self.prefill_tokens += n
        self.prefill_flops = None if self.prefill_flops is None or flops is None else self.prefill_flops + flops

    def add_forward(self, n: int, flops: Optional[int]) -> None:
        self.forward_tokens += n
        self.forward_flops = None if self.forward_flops is None or flops is None else self.forward_flops + flops

    def __iadd__(self, other: "Cost") -> "Cost":
        self.add_prefill(other.prefill_tokens, other.prefill_flops)
        self.add_forward(other.forward_tokens, other.forward_flops)
        return self

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.forward_tokens

    @property
    def flops(self) -> Optional[int]:
        if self.prefill_flops is None or self.forward_flops is None:
            return None
        return self.prefill_flops + self.forward_flops

    def to_dict(self) -> dict:
        return asdict(self)


def add_costs(into: dict, other: Mapping[str, Cost]) -> dict:
    """Add ``other`` ({model: Cost}) into ``into`` (same form), in place; returns ``into``."""
    for name, cost in other.items():
        mine = into.setdefault(name, Cost())
        mine += cost
    return into


def total_flops(costs: Iterable) -> Optional[int]:
    """The FLOPs of several costs (:class:`Cost` or their dicts) together; None if any is unknown."""
    total = 0
    for c in costs:
        flops = c.flops if isinstance(c, Cost) else _dict_flops(c)
        if flops is None:
            return None
        total += flops
    return total


def _dict_flops(d: Mapping) -> Optional[int]:
    a, b = d.get("prefill_flops"), d.get("forward_flops")
    return None if a is None or b is None else a + b


def costs_to_dict(costs: Mapping[str, Cost]) -> dict:
    """{model: Cost} as plain JSON data, models in name order."""
    return {name: costs[name].to_dict() for name in sorted(costs)}


def costs_from_dict(d: Mapping[str, Mapping]) -> dict:
    return {name: Cost(**{k: v for k, v in c.items() if k in Cost.__dataclass_fields__}) for name, c in d.items()}


def flops_of(shape: Optional[ModelShape], n: int, before: int = 0) -> Optional[int]:
    """:meth:`ModelShape.flops` of ``shape``, None without a shape."""
    return None if shape is None else shape.flops(n, before)
