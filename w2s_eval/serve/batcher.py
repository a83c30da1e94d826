"""Continuous batching: concurrent requests become batched engine calls on one worker thread.

Every prompt of every request is a :class:`Job` with its own random stream seed. The worker
takes the first waiting job, gathers more for at most ``max_wait_ms`` (or until
``max_batch_prompts``), groups them by (method, sampling settings) and runs each group as
one :meth:`Engine.generate` call with explicit per-prompt seeds, so a prompt's text does not
depend on what else is in flight. Model work happens on this one thread only (the models
are not shared between threads); other work for the models (prompt scoring) is queued as a
call and runs between batches.

A job whose client went away before its batch started is skipped (its future was
cancelled, counted in ``stats["cancelled"]``); a job already running finishes and its result
is dropped. One failing group
fails only its own jobs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Union

from ..checks import check_positive_int
from ..config import Method, SamplingConfig

if TYPE_CHECKING:
    from ..engine import PreparedMethod

logger = logging.getLogger(__name__)

__all__ = ["Job", "Batcher"]


@dataclass
class Job:
    """One prompt to generate for: what the strong model sees, what the guides see, its stream seed."""

    prompt: str
    guide_prompt: str
    seed: int
    method: Union[Method, "PreparedMethod"]  # what Engine.generate takes; the server prepares each once
    sampling: SamplingConfig
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        return (self.method.spec, self.sampling)


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)


class Batcher:
    """Runs :class:`Job` s in batches on one daemon thread; ``stats`` counts batches and prompts."""

    def __init__(self, engine, max_batch_prompts: int = 32, max_wait_ms: float = 5.0):
        check_positive_int("max_batch_prompts", max_batch_prompts)
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.engine, self.max_batch, self.max_wait = engine, max_batch_prompts, max_wait_ms / 1000.0
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        # counters (jobs submitted, batches and prompts run, jobs skipped as cancelled) and the running batch's size
        self.stats = {"submitted": 0, "batches": 0, "prompts": 0, "largest_batch": 0, "cancelled": 0, "running": 0}
        self._thread = threading.Thread(target=self._run, name="w2s-batcher", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Jobs and calls waiting for the model thread (not counting the batch it runs)."""
        return self._queue.qsize()

    def submit(self, jobs: list[Job]) -> list[Future]:
        self.stats["submitted"] += len(jobs)
        for job in jobs:
            self._queue.put(job)
        return [job.future for job in jobs]

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn()`` on the model thread (between batches); its result or error in the future."""
        item = _Call(fn)
        self._queue.put(item)
        return item.future

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _gather(self, first) -> list:
        items, deadline = [first], time.monotonic() + self.max_wait
        while sum(isinstance(item, Job) for item in items) < self.max_batch:
            try:
                wait = deadline - time.monotonic()
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._stop.set()
                break
            items.append(item)
        return items

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._queue.get()
            if first is None:
                break
            items = self._gather(first)
            for item in items:
                if isinstance(item, _Call):
                    _run_call(item)
            groups: dict[tuple, list[Job]] = {}
            for item in items:
                if isinstance(item, Job):
                    if item.future.set_running_or_notify_cancel():
                        groups.setdefault(item.key, []).append(item)
                    else:
                        self.stats["cancelled"] += 1
            for jobs in groups.values():
                self._run_group(jobs)

    def _run_group(self, jobs: list[Job]) -> None:
        self.stats["running"] = len(jobs)
        try:
            results = self.engine.generate(
                [j.prompt for j in jobs],
                jobs[0].method,
                jobs[0].sampling,
                seeds=[j.seed for j in jobs],
                batch_size=len(jobs),
                guide_prompts=[j.guide_prompt for j in jobs],
            )
        except Exception as e:  # noqa: BLE001 (handed to the requests of this group)
            self.stats["running"] = 0
            logger.warning("batch of %d prompts (%s) failed: %s", len(jobs), jobs[0].method.spec, e)
            for j in jobs:
                j.future.set_exception(e)
            return
        self.stats["running"] = 0
        self.stats["batches"] += 1
        self.stats["prompts"] += len(jobs)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        for j, r in zip(jobs, results):
            j.future.set_result(r)


def _run_call(item: _Call) -> None:
    if not item.future.set_running_or_notify_cancel():
        return
    try:
        item.future.set_result(item.fn())
    except Exception as e:  # noqa: BLE001 (handed to the caller)
        item.future.set_exception(e)
