"""A KV cache with room to grow: transformers' ``DynamicCache`` whose full-attention layers write new positions
in place instead of concatenating (a copy of the whole layer per token), for the strong model's rows, which only
grow and get reordered between chunks. The values are those of a plain ``DynamicCache``."""

from __future__ import annotations

from typing import Optional

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["roomy_cache"]


class _RoomyLayer(DynamicLayer):
    """A :class:`DynamicLayer` whose keys and values are views of buffers with room for ``room`` more positions:
    an update writes the new positions in place instead of ``torch.cat`` (a copy of the whole layer per token),
    and a reorder copies the used positions into a new buffer of the same room (on CPU, the one the previous reorder
    left). Its tensors hold the same values as a DynamicLayer's; any other operation (a batch selection, a crop)
    leaves plain tensors that the next update moves into a new buffer."""

    def __init__(self, room: int):
        super().__init__()
        self.room = max(int(room), 1)
        self._buf: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._spare: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def __copy__(self) -> "_RoomyLayer":
        """A shallow copy (as :func:`_rows_of` makes) that shares no spare buffers with this layer."""
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin._spare = None
        return twin

    def _in_buffer(self) -> bool:
        buf = self._buf
        return (
            buf is not None
            and self.keys.data_ptr() == buf[0].data_ptr()
            and self.keys.shape[0] == buf[0].shape[0]
            and self.values.data_ptr() == buf[1].data_ptr()
            and self.keys.stride() == buf[0].stride()
        )

    @torch.inference_mode()  # the buffers are inference tensors (written in place by forwards under it)
    def _regrow(self, used: int, need: int, rows: Optional[torch.Tensor] = None) -> None:
        """New buffers of ``need`` positions holding the first ``used`` positions (of rows ``rows``, if given)."""
        bufs, old = [], self._buf if self._in_buffer() else None
        for i, x in enumerate((self.keys, self.values)):
            n = x.shape[0] if rows is None else rows.shape[0]
            shape = (n, x.shape[1], need, x.shape[3])
            spare = self._spare[i] if self._spare is not None else None
            buf = spare if spare is not None and spare.shape == shape and spare.dtype == x.dtype else x.new_empty(shape)
            if rows is None:
                buf[:, :, :used] = x[:, :, :used]
            else:
                torch.index_select(x[:, :, :used], 0, rows, out=buf[:, :, :used])  # one copy, into the room
            bufs.append(buf)
        self._buf = (bufs[0], bufs[1])
        # on CPU, the buffers left behind serve the next reorder (fresh memory costs page faults there; CUDA's
        # caching allocator reuses freed blocks by itself)
        self._spare = old if old is not None and old[0].device.type == "cpu" else None
        self.keys, self.values = bufs[0][:, :, :used], bufs[1][:, :, :used]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.keys.numel() == 0:
            self.keys = key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[3]))
            self.values = value_states.new_empty((*value_states.shape[:2], 0, value_states.shape[3]))
        used, new = self.keys.shape[-2], key_states.shape[-2]
        if not self._in_buffer() or used + new > self._buf[0].shape[-2]:
            self._regrow(used, used + new + self.room)
        keys, values = self._buf
        keys[:, :, used : used + new] = key_states
        values[:, :, used : used + new] = value_states
        self.keys, self.values = keys[:, :, : used + new], values[:, :, : used + new]
        return self.keys, self.values

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.get_seq_length() > 0:
            self._regrow(
                self.keys.shape[-2],
                self._buf[0].shape[-2] if self._in_buffer() else self.keys.shape[-2] + self.room,
                beam_idx.to(self.keys.device),
            )


def roomy_cache(config, room: int) -> DynamicCache:
    """``DynamicCache(config=config)`` whose full-attention layers keep room for ``room`` more positions
    (see :class:`_RoomyLayer`); sliding-window layers as transformers makes them."""
    cache = DynamicCache(config=config)
    cache.layers = [_RoomyLayer(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
