"""Durability of the journal's commits, off the event loop.

SQLite runs with `synchronous=NORMAL`: a COMMIT appends to the write-ahead log without waiting
for the disk, which takes the disk's time (milliseconds) off the event loop. For the journal's
`synchronous: full` (durable across a power cut) the WAL file is then fsynced in a thread of
its own, and only after that fsync returns does anything that waited for the commit run
(acknowledgements, the outbox). Commits made while an fsync is under way are covered by the
next one: one fsync for a whole group, however many commits it took (the journal itself holds
its writes back until then, `in_flight`, and commits them as one). A killed process loses
nothing either way: committed pages are in the operating system's hands.

Only a commit somebody is waiting on starts an fsync at once (`urgent`: its results are to be
published). One that only acknowledges inputs, or that nobody waits for (a job marked running,
sent rows deleted), waits up to `lazy_delay` for the next urgent commit to share its fsync:
a job's intake and its result then take one fsync, not two. The source holds an input until it
is acknowledged and sends it again if it was not, so the wait costs nothing but the delay;
once `ACKS_SOON` acknowledgements wait, though, the fsync starts at once: a broker sends only
so many inputs unacknowledged (Mosquitto: 20 to an MQTT 3.1.1 client), and a flood must not
wait for the delay, batch after batch, while the broker's queue fills and drops.

On macOS fsync hands the data to the drive and no further: the drive may keep it in its cache,
and reorder it, past a power cut. There the sync is `F_FULLFSYNC`, which asks the drive to
write its cache out (plain fsync where a file system does not support it); the journal asks
SQLite for the same at its checkpoints (`PRAGMA checkpoint_fullfsync`).

A failed fsync is final (`JournalFailed`, and the daemon stops): what waited is never run,
and no fsync is tried again, since a second one may report success for pages the first could
not write. A WAL file that cannot be opened (too many open files) is tried again: nothing was
synced or released yet.

The thread is the journal's own, fed through a queue, not an executor's, and it does nothing but
the fsync: per fsync it takes the interpreter's lock back three times (woken, fsync returned,
the loop told), and each time the busy loop thread has to hand the lock over (futex calls and
two context switches). The executor's worker, future and stat made it five; the check that the
WAL file is still the one SQLite writes is made on the loop thread, before the request, where
it costs one system call and no hand-over (`python -m bench syscalls`).
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

Batch = list[Callable[[], None]]
RETRY_S = 1.0  # after the WAL file could not be opened (too many open files)
FULLFSYNC: int | None = getattr(fcntl, "F_FULLFSYNC", None)  # macOS only
ACKS_SOON = 10  # acknowledgements waiting that start an fsync without waiting for company


class JournalFailed(Exception):
    """The journal lost writes it had taken, or cannot say they are on disk (a full disk, an I/O
    error): what the process holds in memory no longer matches it, and only a restart, which
    reads the journal again, is safe. Nothing that waited for those writes has run."""


def sync_file(fd: int) -> None:
    """What was written to `fd` survives a power cut (see the module's text for macOS)."""
    if FULLFSYNC is not None:
        try:
            fcntl.fcntl(fd, FULLFSYNC)
            return
        except OSError:  # not supported by this file system (a network share): fsync it is
            pass
    os.fsync(fd)


class WalSync:
    """Runs callbacks once the commits before them are on disk (`enabled`) or at once."""

    def __init__(
        self,
        wal: Path,
        *,
        enabled: bool,
        on_durable: Callable[[], object],
        on_failure: Callable[[JournalFailed], object],
        lazy_delay: float = 0.05,
    ) -> None:
        self._wal = wal
        self.enabled = enabled
        self.lazy_delay = lazy_delay
        self._on_durable = on_durable  # after every batch (the outbox sends what became durable)
        self._on_failure = on_failure  # an fsync failed: the journal's owner is told
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # One item per fsync to make: the loop to tell once it returned (None: stop).
        self._requests: queue.SimpleQueue[asyncio.AbstractEventLoop | None] = queue.SimpleQueue()
        self._fd: int | None = None
        self._pending: Batch = []  # waits for the next fsync
        self._dirty = False  # something was committed since the last fsync began
        self._urgent = False  # ... and something waiting for it wants it soon
        self._acks = 0  # acknowledgements waiting for the next fsync
        self._later: asyncio.TimerHandle | None = None  # the fsync nobody hurries
        self._flight: Batch | None = None  # waits for the fsync under way
        self._held: asyncio.TimerHandle | None = None  # the WAL file could not be opened: retry
        self.failed: JournalFailed | None = None  # an fsync failed: nothing is released any more
        self.fsyncs = 0  # made so far

    def use_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """fsync in a thread and call back on `loop` (None: fsync inline, as the CLI does)."""
        self._loop = loop
        if loop is not None and self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="journal-fsync", daemon=True)
            self._thread.start()

    @property
    def in_flight(self) -> bool:
        """An fsync is under way."""
        return self._flight is not None

    @property
    def busy(self) -> bool:
        """Some callbacks still wait for an fsync."""
        return self._flight is not None or bool(self._pending)

    def committed(self, callbacks: Batch, *, wrote: bool, urgent: bool = True, acks: int = 0) -> None:
        """A commit happened (`wrote`: it wrote something); run `callbacks` once it is durable
        (`urgent`: soon; otherwise within `lazy_delay`, with the next urgent commit if one comes,
        or as soon as `ACKS_SOON` acknowledgements wait: `acks`, those among `callbacks`)."""
        if self.failed is not None:
            return  # they wait for what may never reach the disk: they never run
        self._pending += callbacks
        self._dirty = self._dirty or (wrote and self.enabled)
        self._acks += acks
        self._urgent = self._urgent or urgent or self._acks >= ACKS_SOON
        if self._flight is not None or self._held is not None:
            return  # the next fsync starts when this one is done
        self._next()

    def _next(self) -> None:
        """Nothing is syncing: sync what waits, now or (nobody hurrying it) a little later."""
        if not self._dirty or self._loop is None:
            self._sync_now()
        elif self._urgent:
            self._start()
        elif self._later is None:
            self._later = self._loop.call_later(self.lazy_delay, self._start_late)

    def _start_late(self) -> None:
        self._later = None
        if self._flight is None and self._held is None:
            self._urgent = True  # waited long enough
            self._next()

    def _take(self) -> Batch:
        """What waits, for the fsync made now: nothing is left waiting for a later one."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        batch, self._pending = self._pending, []
        self._dirty = self._urgent = False
        self._acks = 0
        return batch

    def _sync_now(self) -> None:
        if self._dirty:
            self._dirty = False
            self._open_wal()
            self._fsync()
        self._run(self._take())

    def _start(self) -> None:
        assert self._loop is not None
        try:
            self._open_wal()  # the thread is idle: the descriptor is the loop's to change
        except OSError as exc:  # nothing was synced or released: hold it and try again
            log.error("cannot open the journal's WAL file %s to sync it: %s; retrying", self._wal, exc)
            self._held = self._loop.call_later(RETRY_S, self._retry)
            return
        self._flight = self._take()
        self._requests.put(self._loop)

    def _serve(self) -> None:
        """The fsync thread: one fsync per request, then the loop is told how it went."""
        while (loop := self._requests.get()) is not None:
            error: Exception | None = None
            try:
                self._fsync()
            except Exception as exc:  # reported on the loop; the thread must not die of it
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: close() ran the batch
                loop.call_soon_threadsafe(self._done, error)

    def _done(self, error: Exception | None) -> None:
        batch, self._flight = self._flight, None
        if batch is None:
            return  # closed meanwhile: close() ran it
        if error is not None:
            # Not tried again: after a failed fsync Linux may have dropped the pages it could not
            # write and marked them clean, so a second fsync succeeds without them. What waited
            # (acks, the outbox) never runs; a restart recovers the WAL as the disk holds it.
            self._pending = []
            self.failed = JournalFailed(f"the journal's WAL file {self._wal} could not be synced: {error}")
            self._on_failure(self.failed)
            return
        self._run(batch)
        if self._pending and self._flight is None:
            self._next()

    def _retry(self) -> None:
        self._held = None
        if self._flight is None and self._pending:
            self._start()

    def _run(self, batch: Batch) -> None:
        for callback in batch:
            callback()
        self._on_durable()

    def _open_wal(self) -> None:
        """Hold the WAL file the next fsync is for (None: there is none)."""
        if not self.enabled:
            return
        # SQLite keeps one WAL file while a connection is open, and the journal's stays open
        # as long as this syncs; should the file it holds be unlinked all the same, the new
        # one is opened (one fstat on the open file, not a stat of the path as well).
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            os.close(self._fd)
            self._fd = None
        if self._fd is None:
            with contextlib.suppress(FileNotFoundError):  # no WAL: all is in the database file,
                self._fd = os.open(self._wal, os.O_RDONLY)  # synced by its checkpoint

    def _fsync(self) -> None:
        if self.enabled and self._fd is not None:
            sync_file(self._fd)
            self.fsyncs += 1

    def close(self) -> None:
        """Sync what is left and run what waited for it, here and now."""
        if self._thread is not None:
            self._requests.put(None)  # after the fsync under way, if one is
            self._thread.join()
            self._thread = None
        for timer in (self._held, self._later):
            if timer is not None:
                timer.cancel()
        self._held = self._later = None
        batch, self._flight = self._flight or [], None
        self._pending[:0] = batch
        self._dirty = self._dirty or bool(batch)
        self._loop = None
        if self.failed is None:
            self._sync_now()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
