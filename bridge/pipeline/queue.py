"""The wait queue in front of the model: highest priority first, then oldest first.

Only ids and sort keys live here; everything else stays in the journal, so ten thousand
waiting jobs cost little memory. A job that must wait (retry backoff) is held back until its
time comes.

Two refinements, both driven by `traits` (set by the schedule extension; without it the queue
is plain priority-then-age):
- coalescing: a job with a `coalesce` key replaces a waiting job with the same key (the newest
  snapshot of a state-like rule is the only one worth judging); `on_superseded` is told;
- model affinity: among waiting jobs of the same priority, jobs for the model that ran last go
  first (up to `batch` in a row while other models wait), so Ollama does not swap models on
  every job. Priority always wins: an interactive job is never held back by affinity.
"""

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass


class QueueClosed(Exception):
    """The queue is closed: the daemon is stopping."""


@dataclass(frozen=True)
class JobTraits:
    """What the queue may know about a job beyond its id and sort keys."""

    model: str = ""
    coalesce: str | None = None


_Entry = tuple[int, float, int, str]


class JobQueue:
    """A priority queue of job ids for the workers of one event loop."""

    def __init__(self, clock: Callable[[], float] = time.time, *, batch: int = 8) -> None:
        self._heaps: dict[str, list[_Entry]] = {}
        self._size = 0
        self._order = itertools.count()
        self._clock = clock
        self._ready = asyncio.Event()
        self._closed = False
        self._delayed: dict[str, asyncio.TimerHandle] = {}
        self._waiting: dict[str, tuple[str, float]] = {}  # coalesce key -> (job id, created)
        self._keys: dict[str, str] = {}  # job id -> its coalesce key
        self._dropped: set[str] = set()  # superseded ids still in a heap
        self._batch = batch
        self._model: str | None = None
        self._streak = 0
        self.traits: Callable[[str], JobTraits] | None = None
        self.on_superseded: Callable[[str, str], None] | None = None

    def __len__(self) -> int:
        return self._size + len(self._delayed)

    def push(self, job_id: str, *, priority: int = 0, created: float = 0.0, not_before: float = 0.0) -> None:
        wait = not_before - self._clock()
        if wait > 0:
            loop = asyncio.get_running_loop()
            self._delayed[job_id] = loop.call_later(wait, self._release, job_id, priority, created)
            return
        traits = self.traits(job_id) if self.traits is not None else JobTraits()
        if traits.coalesce is not None and not self._coalesce(job_id, traits.coalesce, created):
            return
        heapq.heappush(
            self._heaps.setdefault(traits.model, []), (-priority, created, next(self._order), job_id)
        )
        self._size += 1
        self._ready.set()

    def _coalesce(self, job_id: str, key: str, created: float) -> bool:
        """Keep only the newest waiting job per key; False when `job_id` itself is the stale one."""
        waiting = self._waiting.get(key)
        if waiting is not None:
            old_id, old_created = waiting
            if old_created > created:  # e.g. an older job back from a retry delay
                self._supersede(job_id, old_id)
                return False
            self._dropped.add(old_id)
            self._keys.pop(old_id, None)
            self._size -= 1
            self._supersede(old_id, job_id)
        self._waiting[key] = (job_id, created)
        self._keys[job_id] = key
        return True

    def _supersede(self, old_id: str, new_id: str) -> None:
        if self.on_superseded is not None:
            self.on_superseded(old_id, new_id)

    def _release(self, job_id: str, priority: int, created: float) -> None:
        self._delayed.pop(job_id, None)
        self.push(job_id, priority=priority, created=created)

    async def get(self) -> str:
        """The next job id; raises QueueClosed once the queue is closed."""
        while True:
            if self._closed:
                raise QueueClosed
            job_id = self._pop()
            if job_id is not None:
                return job_id
            self._ready.clear()
            await self._ready.wait()

    def _pop(self) -> str | None:
        best: str | None = None
        for model, heap in self._heaps.items():
            while heap and heap[0][3] in self._dropped:
                self._dropped.discard(heapq.heappop(heap)[3])
            if heap and (best is None or heap[0] < self._heaps[best][0]):
                best = model
        if best is None:
            return None
        current = self._heaps.get(self._model) if self._model is not None else None
        if (
            best != self._model
            and current
            and current[0][0] == self._heaps[best][0][0]  # same priority
            and self._streak < self._batch
        ):
            best = self._model
        assert best is not None
        if best == self._model:
            self._streak += 1
        else:
            self._model, self._streak = best, 1
        job_id = heapq.heappop(self._heaps[best])[3]
        self._size -= 1
        key = self._keys.pop(job_id, None)
        if key is not None and self._waiting.get(key, ("",))[0] == job_id:
            del self._waiting[key]
        return job_id

    def close(self) -> None:
        """Stop handing out jobs; waiting ones stay in the journal for the next start."""
        self._closed = True
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        self._ready.set()
