"""Data-parallel runs: which rank this process is, its device, and the collectives lm-eval calls.

``accelerate launch -m lm_eval ...`` (or ``torchrun``) starts one process per rank and sets
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``. lm-eval shards the documents by
``lm.rank`` / ``lm.world_size`` (document i goes to rank i mod world_size), pads the
request lists to equal length with ``lm.all_gather``, and collects per-rank metrics with
``lm.gather_object``; rank 0 writes the results. Each rank loads its own copy of the
models on ``cuda:LOCAL_RANK`` (or the CPU), so data parallelism and a strong model
split over GPUs with ``device_map`` are separate choices.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

logger = logging.getLogger(__name__)

__all__ = ["World", "detect_world", "rank_device", "shard_indices", "Collectives"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self):
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(f"inconsistent launcher environment: RANK={self.rank}, WORLD_SIZE={self.world_size}, "
                             f"LOCAL_RANK={self.local_rank}; start the ranks with accelerate launch or torchrun")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def detect_world(env: Optional[Mapping[str, str]] = None) -> World:
    """The rank and world size the launcher set (a single process when none did)."""
    env = os.environ if env is None else env
    world_size = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", rank)
    return World(rank, world_size, local_rank)


def rank_device(device: Optional[str], world: World, cuda_available: bool, n_gpus: int = 0) -> Optional[str]:
    """The device for this rank: ``cuda:LOCAL_RANK`` when several ranks share a machine's
    GPUs and the user asked for no particular one ("auto", "cuda" or nothing)."""
    if not world.distributed or not cuda_available:
        return device
    if device in (None, "auto", "cuda"):
        if n_gpus and world.local_rank >= n_gpus:
            raise ValueError(f"rank {world.rank} has LOCAL_RANK={world.local_rank} but this machine has {n_gpus} GPUs; "
                             "launch at most one process per GPU")
        return f"cuda:{world.local_rank}"
    return device


def shard_indices(n_docs: int, world: World, limit: Optional[int] = None) -> list[int]:
    """The document indices this rank evaluates: lm-eval's ``islice(docs, rank, limit, world_size)``."""
    stop = n_docs if limit is None else min(limit, n_docs)
    return list(range(world.rank, stop, world.world_size))


class Collectives:
    """all_gather / gather_object / barrier over torch.distributed (gloo on CPU, nccl on GPU).

    The process group is created from the launcher's environment on first use.
    """

    def __init__(self, world: World, device):
        self.world, self.device = world, device

    def _init(self) -> None:
        import torch
        import torch.distributed as dist

        if dist.is_initialized():
            return
        backend = "nccl" if torch.device(self.device).type == "cuda" else "gloo"
        logger.info("rank %d/%d: init process group (%s)", self.world.rank, self.world.world_size, backend)
        dist.init_process_group(backend=backend, rank=self.world.rank, world_size=self.world.world_size)

    def all_gather(self, tensor):
        """Concatenate ``tensor`` from every rank along dim 0 (a 0-d tensor gives one entry per rank)."""
        if not self.world.distributed:
            return tensor
        import torch
        import torch.distributed as dist

        self._init()
        t = tensor.reshape(1) if tensor.dim() == 0 else tensor
        out = [torch.zeros_like(t) for _ in range(self.world.world_size)]
        dist.all_gather(out, t.contiguous())
        return torch.cat(out, dim=0)

    def gather_object(self, obj: Any, dst: int = 0):
        if not self.world.distributed:
            return [obj]
        import torch.distributed as dist

        self._init()
        out = [None] * self.world.world_size if self.world.rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if not self.world.distributed:
            return
        import torch.distributed as dist

        self._init()
        dist.barrier()
