"""Durability of the journal's commits, off the event loop.

SQLite runs with `synchronous=NORMAL`: a COMMIT appends to the write-ahead log without waiting
for the disk, which takes the disk's time (milliseconds) off the event loop. For the journal's
`synchronous: full` (durable across a power cut) the WAL file is then fsynced in a thread of
its own, and only after that fsync returns does anything that waited for the commit run
(acknowledgements, the outbox). Commits made while an fsync is under way are covered by the
next one: one fsync for a whole group, however many commits it took. A killed process loses
nothing either way: committed pages are in the operating system's hands.
"""

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

Batch = list[Callable[[], None]]
RETRY_S = 1.0


class WalSync:
    """Runs callbacks once the commits before them are on disk (`enabled`) or at once."""

    def __init__(self, wal: Path, *, enabled: bool, on_durable: Callable[[], object]) -> None:
        self._wal = wal
        self.enabled = enabled
        self._on_durable = on_durable  # after every batch (the outbox sends what became durable)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._fd: int | None = None
        self._pending: Batch = []  # waits for the next fsync
        self._dirty = False  # something was committed since the last fsync began
        self._flight: Batch | None = None  # waits for the fsync under way

    def use_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """fsync in a thread and call back on `loop` (None: fsync inline, as the CLI does)."""
        self._loop = loop
        if loop is not None and self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-fsync")

    @property
    def busy(self) -> bool:
        """Some callbacks still wait for an fsync."""
        return self._flight is not None or bool(self._pending)

    def committed(self, callbacks: Batch, *, wrote: bool) -> None:
        """A commit happened (`wrote`: it wrote something); run `callbacks` once it is durable."""
        self._pending += callbacks
        self._dirty = self._dirty or (wrote and self.enabled)
        if self._flight is not None:
            return  # the next fsync starts when this one is done
        if not self._dirty or self._loop is None:
            self._sync_now()
        else:
            self._start()

    def _sync_now(self) -> None:
        if self._dirty:
            self._dirty = False
            self._fsync()
        batch, self._pending = self._pending, []
        self._run(batch)

    def _start(self) -> None:
        assert self._executor is not None
        assert self._loop is not None
        self._flight, self._pending, self._dirty = self._pending, [], False
        loop = self._loop
        future = self._executor.submit(self._fsync)
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(self._done, done))

    def _done(self, future: "Future[None]") -> None:
        batch, self._flight = self._flight, None
        if batch is None:
            return  # closed meanwhile: close() ran it
        error = future.exception()
        if error is not None:
            # Nothing that waits is released before the disk has it: try again shortly.
            log.error("cannot make the journal durable (fsync %s): %s; retrying", self._wal, error)
            self._pending[:0] = batch
            self._dirty = True
            assert self._loop is not None
            self._loop.call_later(RETRY_S, self._retry)
            return
        self._run(batch)
        if self._pending and self._flight is None:
            if self._dirty:
                self._start()
            else:
                self._sync_now()

    def _retry(self) -> None:
        if self._flight is None and self._pending:
            self._start()

    def _run(self, batch: Batch) -> None:
        for callback in batch:
            callback()
        self._on_durable()

    def _fsync(self) -> None:
        if not self.enabled:
            return
        # The WAL is one file for the database's life; it is reopened if SQLite made a new one.
        try:
            same = self._fd is not None and os.fstat(self._fd).st_ino == os.stat(self._wal).st_ino
        except FileNotFoundError:
            return  # no WAL: everything is in the database file, synced by its checkpoint
        if not same:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(self._wal, os.O_RDONLY)
        assert self._fd is not None
        os.fsync(self._fd)

    def close(self) -> None:
        """Sync what is left and run what waited for it, here and now."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        batch, self._flight = self._flight or [], None
        self._pending[:0] = batch
        self._dirty = self._dirty or bool(batch)
        self._loop = None
        self._sync_now()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
