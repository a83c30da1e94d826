"""Shards of a run: shard I of N (0 <= I < N) takes every N-th batch of prompts, starting at batch I.

A run's prompts are cut into batches of ``batch_size`` as one process cuts them; shard I computes the batches
``b`` with ``b % N == I`` into a file of its own inside the run directory (``<stem>.shard-I-of-N<suffix>``), held
under an exclusive lock while it runs, so N processes (a SLURM array, ``accelerate launch``, separate machines on
a shared disk) run one grid side by side and a killed shard resumes alone. The front end that owns the files
assembles them (``w2s-eval merge``, or the first later command that reads the run).

``--shard auto`` reads the process's place from the environment: a SLURM array (``SLURM_ARRAY_TASK_ID`` minus
``SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT``) or a launcher that sets ``RANK`` and ``WORLD_SIZE``
(``accelerate launch``, ``torchrun``); with neither it is one process (no shard).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence, TypeVar

__all__ = ["Shard", "ShardBusyError", "file_lock", "shard_files", "process_shard"]

_T = TypeVar("_T")
_NAME = re.compile(r"^(?P<stem>.+)\.shard-(?P<i>\d+)-of-(?P<n>\d+)(?P<suffix>\.[^.]+)$")


class ShardBusyError(FileExistsError):
    """Another process holds the lock of a shard's file (or of the file a merge writes)."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int
    count: int

    def __post_init__(self):
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.index, self.count))
        if not ok or self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"--shard {self.index}/{self.count}: give I/N with 0 <= I < N (e.g. 0/2 and 1/2), or auto")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: Optional[str], env: Optional[Mapping[str, str]] = None) -> Optional["Shard"]:
        """``"I/N"`` -> Shard(I, N); ``"auto"``: :meth:`from_env`; None or ``""``: None (one process)."""
        if not text:
            return None
        if text.strip() == "auto":
            return cls.from_env(env)
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise ValueError(f"--shard {text!r}: give I/N with 0 <= I < N (e.g. 0/2 and 1/2), or auto")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> Optional["Shard"]:
        """This process's shard from a SLURM array or ``RANK``/``WORLD_SIZE``; None for a lone process."""
        env = os.environ if env is None else env
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            return cls(index, int(env["SLURM_ARRAY_TASK_COUNT"]))
        if int(env.get("WORLD_SIZE", "1")) > 1:
            return cls(int(env.get("RANK", "0")), int(env["WORLD_SIZE"]))
        return None

    def owns(self, batch: int) -> bool:
        return batch % self.count == self.index

    def select(self, items: Sequence[_T], batch_size: int) -> list[_T]:
        """The items of this shard's batches, in order (whole batches, as one process cuts them)."""
        return [x for i, x in enumerate(items) if self.owns(i // batch_size)]

    def file(self, name: str) -> str:
        """This shard's name for a run file: ``records.jsonl`` -> ``records.shard-0-of-2.jsonl``."""
        stem, dot, suffix = name.rpartition(".")
        return f"{stem}.shard-{self.index}-of-{self.count}.{suffix}" if dot else f"{name}.shard-{self}"


def process_shard(text: Optional[str]) -> Optional[Shard]:
    """This process's ``--shard`` (:meth:`Shard.parse`); with ``auto`` under a launcher that sets ``LOCAL_RANK``
    and where CUDA is, the process's default GPU becomes ``cuda:LOCAL_RANK`` (so ``device auto`` is its own)."""
    shard = Shard.parse(text)
    if shard is not None and text.strip() == "auto" and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return shard


def shard_files(directory: os.PathLike, name: str) -> list[tuple[Shard, Path]]:
    """The shard files of run file ``name`` in ``directory``, by shard count then index."""
    stem, _, suffix = name.rpartition(".")
    found = []
    for path in Path(directory).glob(f"{stem}.shard-*-of-*.{suffix}"):
        m = _NAME.match(path.name)
        if m and m["stem"] == stem and m["suffix"] == f".{suffix}":
            found.append((Shard(int(m["i"]), int(m["n"])), path))
    return sorted(found, key=lambda sp: (sp[0].count, sp[0].index))


@contextlib.contextmanager
def file_lock(path: os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (a ``.lock`` file beside it) or raise :class:`ShardBusyError` at once,
    naming ``what``. Where ``fcntl`` is missing (Windows) nothing is locked."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    try:
        import fcntl  # POSIX only
    except ImportError:  # pragma: no cover - Windows: shards must not share a file there
        yield lock
        return
    with open(lock, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ShardBusyError(
                f"{what} is in use by another process ({lock} is locked); wait for it to finish, or stop it first"
            ) from None
        try:
            yield lock
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
