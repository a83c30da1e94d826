"""A causal LM held by composition, and batched rows of its KV cache.

:class:`CausalLM` holds a transformers model and its tokenizer and exposes the
one forward pass the engine needs. :class:`KVRows` is a batch of rows (one per
beam) with a KV cache and a 2-D attention mask in which 0 marks left padding or
a *hole* (a cached position that a row no longer uses). Rows are reordered,
duplicated or dropped through the public ``Cache.reorder_cache`` API.

Architectures (docs/engine.md): the cache is a ``DynamicCache`` built from the
model's config, so sliding-window layers (Mistral, Gemma-3, Qwen2 with a window)
keep only their window. A cache that must be rewound (the guides') keeps every
position instead; there, and only there, holes would shift transformers'
index-based window, so the attention masks are built from token positions and
passed per layer type (one 4-D mask, or a dict for mixed layers as Gemma-3 takes).
Rows given ``room`` (the strong model's) keep their full-attention layers in buffers
with room to grow (:mod:`w2s_eval.kvroom`): a new token is written in place, not
concatenated onto a copy of the whole cache; the values are those of a DynamicCache.

Memory: a forward that raises ``torch.OutOfMemoryError`` is rerun on halves of its
rows (down to one row) by :func:`split_on_oom`; rows are independent, so the
results are those of the unsplit pass.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .flops import ModelShape, shape_of
from .kvroom import roomy_cache

logger = logging.getLogger(__name__)

__all__ = [
    "CausalLM",
    "KVRows",
    "left_pad",
    "right_pad",
    "split_on_oom",
    "OutOfMemoryError",
    "cache_kwarg",
    "user_turn",
]

OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
_T = TypeVar("_T")
_ATTENTION = ("full_attention", "sliding_attention")
_OOM_WARNED: set = set()  # model names already warned about (a warning once per model, then debug)


def split_on_oom(
    run: Callable[[int, int], _T], n_rows: int, name: str = "model", rows: Optional[int] = None
) -> tuple[list[_T], int]:
    """Call ``run(lo, hi)`` on consecutive row ranges covering ``[0, n_rows)``.

    At most ``rows`` rows a call (default: all). When a call raises
    ``torch.OutOfMemoryError``, the rows per call are halved (down to one row,
    where the error is raised) and that range is run again. The split is logged as
    a warning the first time for ``name`` in this process (at debug level after).
    Returns (the outputs in row order, the rows per call that worked), so a caller
    can start there next time. ``run`` must leave no state changed when it raises.
    """
    size = max(1, min(rows or n_rows, n_rows))
    outs: list[_T] = []
    lo, warned = 0, False
    while lo < n_rows:
        hi = min(lo + size, n_rows)
        try:
            outs.append(run(lo, hi))
            lo = hi
            continue
        except OutOfMemoryError:
            if size == 1:
                raise
        size = (size + 1) // 2  # out of the except block: the failed pass's tensors are freed
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if not warned:
            level = logging.DEBUG if name in _OOM_WARNED else logging.WARNING
            _OOM_WARNED.add(name)
            logger.log(
                level,
                "%s ran out of memory on %d rows; splitting its forward passes (%d rows, halved "
                "again as needed; results unchanged)",
                name,
                hi - lo,
                size,
            )
            warned = True
    return outs, size


@functools.lru_cache(maxsize=None)
def cache_kwarg(model_cls: type) -> str:
    """The name under which ``model_cls.forward`` takes the KV cache: ``cache`` in newer
    transformers (``past_key_values`` is deprecated there), else ``past_key_values``; for a
    wrapper whose forward names neither (``**kwargs``), the name transformers' Llama takes."""
    params = inspect.signature(model_cls.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    from transformers import LlamaForCausalLM

    return "past_key_values" if model_cls is LlamaForCausalLM else cache_kwarg(LlamaForCausalLM)


def attention_types(config) -> tuple[tuple[str, ...], Optional[int]]:
    """The distinct attention layer types of a model config and its sliding window (None: none)."""
    text = config.get_text_config(decoder=True)
    window = getattr(text, "sliding_window", None)
    types = getattr(text, "layer_types", None)
    if types is None:
        types = ["sliding_attention" if window else "full_attention"]
    types = tuple(dict.fromkeys(types))
    return types, (window if "sliding_attention" in types else None)


def position_masks(mask: torch.Tensor, q_len: int, types: tuple[str, ...], window: Optional[int], dtype: torch.dtype):
    """Additive 4-D masks [R, 1, q_len, K] over a 2-D mask [R, K] (1 = real token), for each
    attention type, where the window counts real tokens: a query at real position i sees a
    real key at j <= i when ``i - j < window`` (sliding layers). Holes and padding never
    shift it. A padding query sees itself, so no row is empty. Returns one mask, or a dict
    by type when there are several."""
    mask = mask.bool()
    k_len = mask.shape[1]
    pos = mask.long().cumsum(-1) - 1
    idx = torch.arange(k_len, device=mask.device)
    q_idx = idx[k_len - q_len :]
    causal = idx.unsqueeze(0) <= q_idx.unsqueeze(1)  # [q, K]
    base = mask.unsqueeze(1) & causal.unsqueeze(0)  # [R, q, K]
    self_seen = (idx.unsqueeze(0) == q_idx.unsqueeze(1)).unsqueeze(0)
    out = {}
    for kind in types:
        allowed = base
        if kind == "sliding_attention":
            dist = pos[:, k_len - q_len :].unsqueeze(2) - pos.unsqueeze(1)
            allowed = base & (dist < window)
        allowed = allowed | self_seen
        out[kind] = (
            torch.zeros(allowed.shape, dtype=dtype, device=mask.device)
            .masked_fill(~allowed, torch.finfo(dtype).min)
            .unsqueeze(1)
        )
    return out if len(out) > 1 else next(iter(out.values()))


def _keeps_every_position(cache) -> bool:
    return not any(getattr(layer, "is_sliding", False) for layer in cache.layers)


def _splittable(cache) -> bool:
    """True when every layer holds plain key/value tensors (transformers' dynamic layers)."""
    return isinstance(cache, DynamicCache) and all(isinstance(layer, DynamicLayer) for layer in cache.layers)


@contextlib.contextmanager
def _undone_on_oom(cache):
    """Run a forward on ``cache`` itself; if it runs out of memory, put the layers back as they
    were (dynamic layers rebind their tensors on ``update``, so their attributes are the state)."""
    layers = list(cache.layers)
    saved = [dict(vars(layer)) for layer in layers]
    try:
        yield
    except OutOfMemoryError:
        for layer, state in zip(layers, saved):
            vars(layer).clear()
            vars(layer).update(state)
        cache.layers = layers
        raise


def _rows_of(cache, lo: int, hi: int):
    """A cache of rows lo..hi-1 of ``cache`` that leaves ``cache`` as it is when the model
    writes to it: dynamic layers rebind their tensors on ``update``, so a copy of the layer
    objects (not of the tensors) suffices."""
    sub = copy.copy(cache)
    sub.layers = [copy.copy(layer) for layer in cache.layers]
    sub.batch_select_indices(torch.arange(lo, hi, device=_cache_device(cache)))
    return sub


def _cache_device(cache):
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None:
            return layer.keys.device
    return "cpu"


def _adopt(cache, parts: list) -> None:
    """Make ``cache`` hold the rows of ``parts`` (row slices, in order) after a forward."""
    layers = []
    for i, layer in enumerate(parts[0].layers):
        layer = copy.copy(layer)
        layer.keys = torch.cat([p.layers[i].keys for p in parts], dim=0)
        layer.values = torch.cat([p.layers[i].values for p in parts], dim=0)
        layers.append(layer)
    cache.layers = layers


@dataclass
class CausalLM:
    """A causal language model, its tokenizer, and a name for messages.

    ``max_length`` is the model's context (None when the config does not say).
    """

    model: Any
    tokenizer: Any
    name: str = "model"

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def shape(self) -> Optional[ModelShape]:
        """What the FLOP formula reads of this model (:mod:`w2s_eval.flops`); None where its config does not say."""
        try:
            return shape_of(self.model)
        except (ValueError, AttributeError, TypeError):
            return None

    @property
    def max_length(self) -> Optional[int]:
        cfg = self.model.config.get_text_config(decoder=True)
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """End-of-sequence ids from the generation config, else the tokenizer's."""
        ids = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if ids is None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return ()
        return tuple(ids) if isinstance(ids, (list, tuple)) else (int(ids),)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.eos_ids[0] if self.eos_ids else 0
        return int(pad)

    @torch.inference_mode()
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: Optional[DynamicCache]
    ) -> torch.Tensor:
        """Run the model on new tokens; return float32 logits.

        input_ids: [R, T] new tokens; attention_mask: [R, P+T] over cached (P) and new
        positions; cache: holds P positions per row and is extended in place.
        Returns logits [R, T, V]. Position ids count real tokens only, so left padding
        and holes do not shift positions. Out of memory, the rows are split (see
        :func:`split_on_oom`); the results are the same.
        """
        return self.forward_rows(input_ids, attention_mask, cache)[0]

    @torch.inference_mode()
    def forward_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: Optional[DynamicCache],
        rows: Optional[int] = None,
    ) -> tuple[torch.Tensor, int]:
        """:meth:`forward` running at most ``rows`` rows a pass (None: all); returns (logits, the
        rows a pass that fitted in memory)."""
        n = input_ids.shape[0]
        if cache is not None and not _splittable(cache):
            return self._forward_once(input_ids, attention_mask, cache), n

        def run(lo: int, hi: int):
            if cache is None:
                return self._forward_once(input_ids[lo:hi], attention_mask[lo:hi], None), None
            if (lo, hi) == (0, n):
                with _undone_on_oom(cache):
                    return self._forward_once(input_ids, attention_mask, cache), None
            sub = _rows_of(cache, lo, hi)
            return self._forward_once(input_ids[lo:hi], attention_mask[lo:hi], sub), sub

        outs, size = split_on_oom(run, n, self.name, rows)
        if len(outs) == 1:
            return outs[0][0], size
        if cache is not None:
            _adopt(cache, [sub for _, sub in outs])
        return torch.cat([x for x, _ in outs], dim=0), size

    def _forward_once(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache) -> torch.Tensor:
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
        kwargs = {}
        if cache is not None:
            kwargs[cache_kwarg(type(self.model))] = cache
        out = self.model(
            input_ids=input_ids,
            attention_mask=self._mask_for(attention_mask, input_ids.shape[1], cache),
            position_ids=position_ids,
            use_cache=cache is not None,
            **kwargs,
        )
        return out.logits.float()

    def check_rewindable(self) -> None:
        """Raise ValueError unless rows of this model's cache may rewind (holes in the mask): true
        without sliding-window layers, else under eager or sdpa attention with full and sliding layers."""
        types, window = attention_types(self.model.config)
        if window is None:
            return
        unknown = [t for t in types if t not in _ATTENTION]
        impl = getattr(self.model.config, "_attn_implementation", None)
        if unknown or impl not in ("eager", "sdpa"):
            model_type = self.model.config.get_text_config(decoder=True).model_type
            raise ValueError(
                f"{self.name!r} ({model_type}) has sliding-window layers (layer types {types}, attention {impl!r}); "
                "a rewound cache needs position-based masks that w2s-eval builds for full and sliding attention "
                "under eager or sdpa only: load it with attn_implementation='sdpa', or score it with incremental=False"
            )

    def _mask_for(self, attention_mask: torch.Tensor, q_len: int, cache):
        """The 2-D mask as it is, unless sliding-window layers read a cache that keeps every
        position (one that rows rewind, with holes): then masks by token position."""
        types, window = attention_types(self.model.config)
        if window is None or cache is None or not _keeps_every_position(cache):
            return attention_mask
        self.check_rewindable()
        return position_masks(attention_mask, q_len, types, window, self.model.dtype)

    def check_finite(self, logits: torch.Tensor, valid: Optional[torch.Tensor] = None) -> None:
        """Raise if logits [R, V] of real (``valid``) rows hold NaN or inf (a row sum is
        non-finite exactly when the row holds a NaN or an inf, for logits of sane size)."""
        bad = ~torch.isfinite(logits.sum(dim=-1))
        if valid is not None:
            bad &= valid
        if bool(bad.any()):
            raise FloatingPointError(
                f"model {self.name!r} produced NaN/inf logits; try dtype=float32 (half precision can "
                "overflow), or check the weights of this model"
            )


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ids [R, T] and mask [R, T] (1 = real token)."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.tensor([[pad_id] * (width - len(s)) + list(s) for s in seqs], dtype=torch.long).reshape(
        len(seqs), width
    )
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long).reshape(
        len(seqs), width
    )
    return ids.to(device), mask.to(device)


def user_turn(tokenizer, text: str) -> str:
    """``text`` as one user turn of ``tokenizer``'s chat template, with the generation prompt."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def right_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into ids [R, T] and mask [R, T] (1 = real token)."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.tensor([list(s) + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long).reshape(
        len(seqs), width
    )
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long).reshape(
        len(seqs), width
    )
    return ids.to(device), mask.to(device)


class KVRows:
    """A batch of R rows of one model's KV cache with its attention mask [R, P].

    ``rewindable``: the cache keeps every position, so :meth:`forget_after` may turn
    positions into holes that are fed again (a guide's rows); otherwise sliding-window
    layers keep only their window, as ``generate`` does (the strong model's rows, which
    only grow). ``room`` (rows that only grow): positions reserved ahead in each
    full-attention layer (:func:`w2s_eval.kvroom.roomy_cache`; 0: a plain DynamicCache).
    ``tokens_fed`` counts the real (unmasked) token positions this object
    has run through the model, the unit of the compute counters.
    """

    def __init__(self, lm: CausalLM, n_rows: int = 0, rewindable: bool = False, room: int = 0):
        self.lm = lm
        self.rewindable = rewindable
        if rewindable:
            self.cache = DynamicCache()
        else:
            self.cache = roomy_cache(lm.model.config, room) if room else DynamicCache(config=lm.model.config)
        self.mask = torch.zeros((n_rows, 0), dtype=torch.long, device=lm.device)
        self.tokens_fed = 0
        self.rows_per_pass: Optional[int] = None  # set after a pass ran out of memory

    @property
    def n_rows(self) -> int:
        return self.mask.shape[0]

    def select(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` [R'] (indices into the current rows; repeats allowed), in that order."""
        rows = rows.to(self.mask.device)
        self.mask = self.mask.index_select(0, rows)
        if self.cache.get_seq_length() > 0:
            self.cache.reorder_cache(rows)

    def feed(self, input_ids: torch.Tensor, new_mask: torch.Tensor) -> torch.Tensor:
        """Append tokens ``input_ids`` [R, T] (``new_mask`` [R, T], 0 = padding); return logits [R, T, V]."""
        self.mask = torch.cat([self.mask, new_mask.to(self.mask.device)], dim=1)
        logits, rows = self.lm.forward_rows(input_ids.to(self.mask.device), self.mask, self.cache, self.rows_per_pass)
        if rows < self.n_rows:
            self.rows_per_pass = rows
        self.tokens_fed += int(new_mask.sum())
        return logits

    def forget_after(self, keep: torch.Tensor) -> None:
        """Turn each row's real positions beyond its first ``keep[r]`` into holes."""
        if not self.rewindable:
            raise RuntimeError("forget_after needs KVRows(..., rewindable=True): a sliding-window cache cannot rewind")
        seen = self.mask.cumsum(-1)
        self.mask = self.mask * (seen <= keep.to(self.mask.device).unsqueeze(1)).long()
