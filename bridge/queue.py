"""The wait queue in front of the model: highest priority first, then oldest first.

Only ids and sort keys live here; everything else stays in the journal, so ten thousand
waiting jobs cost little memory. A job that must wait (retry backoff) is held back until its
time comes.
"""

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable


class QueueClosed(Exception):
    """The queue is closed: the daemon is stopping."""


class JobQueue:
    """A priority queue of job ids for the workers of one event loop."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._heap: list[tuple[int, float, int, str]] = []
        self._order = itertools.count()
        self._clock = clock
        self._ready = asyncio.Event()
        self._closed = False
        self._delayed: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._heap) + len(self._delayed)

    def push(self, job_id: str, *, priority: int = 0, created: float = 0.0, not_before: float = 0.0) -> None:
        wait = not_before - self._clock()
        if wait > 0:
            loop = asyncio.get_running_loop()
            self._delayed[job_id] = loop.call_later(wait, self._release, job_id, priority, created)
            return
        heapq.heappush(self._heap, (-priority, created, next(self._order), job_id))
        self._ready.set()

    def _release(self, job_id: str, priority: int, created: float) -> None:
        self._delayed.pop(job_id, None)
        self.push(job_id, priority=priority, created=created)

    async def get(self) -> str:
        """The next job id; raises QueueClosed once the queue is closed."""
        while True:
            if self._closed:
                raise QueueClosed
            if self._heap:
                return heapq.heappop(self._heap)[3]
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """Stop handing out jobs; waiting ones stay in the journal for the next start."""
        self._closed = True
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        self._ready.set()
