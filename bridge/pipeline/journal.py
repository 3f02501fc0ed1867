"""The durable journal: jobs, their images (stored once by content hash) and the outbox.

SQLite in WAL mode. Writes made while the event loop runs go into one open transaction
(group commit): committed at the end of the loop iteration when something with outputs to
publish waits for it, else after the lazy delay or with the next such commit (acknowledgements
of inputs alone wait for company too, up to `ACKS_SOON` of them); while an fsync is under way,
once it is done. Whatever must wait for durability (an MQTT ack, publishing from the outbox)
is registered with `after_commit` and runs once the commit is on disk, which is waited for in
a thread (wal_sync.py). Without a loop (the CLI, tests) every write commits at once.

A write SQLite could not keep (a full disk, an I/O error: it rolls the open transaction back)
loses the whole group: nothing that waited for it runs, and `on_failure` is told (the daemon
stops at once and resumes from the journal when started again).

Lifecycle events (QoS 0 telemetry, not the record) get no row: they are held with their
transaction and handed to the outbox once it is durable. A crash can lose an event; never a
result, state or error.
"""

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NoReturn

from bridge.pipeline import records
from bridge.pipeline.files import make_private
from bridge.pipeline.journal_upkeep import JournalUpkeep
from bridge.pipeline.jsontext import dumps
from bridge.pipeline.records import (
    DROP_FAILED_BLOB,
    FINAL_STATES,
    JOB_COLUMNS,
    JOB_COLUMNS_ADDED,
    JOB_INDEXES,
    OUTBOX_COLUMNS,
    OUTBOX_INDEXES,
    SCHEMA,
    Job,
    JobState,
    OpenJob,
    OutboxMessage,
    dumps_or_none,
    job_from_row,
    job_row,
    outbox_row,
    with_job,
)
from bridge.pipeline.wal_sync import ACKS_SOON, JournalFailed, WalSync

# The least time between two commits on the loop. Jobs further apart each commit on their own;
# in a burst, the writes of the jobs that finish within it of a commit share the next one (one
# COMMIT, one set of pages, one fsync), at the cost of at most this much to each one's result.
COMMIT_GAP = 0.005

# The records are imported from here by most of the pipeline.
__all__ = ["FINAL_STATES", "JOB_COLUMNS", "Job", "JobState", "Journal", "JournalFailed", "OpenJob"]
__all__ += ["OutboxMessage", "job_from_row"]


class Journal(JournalUpkeep):
    """Jobs, blobs and outbox in one SQLite database."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["full", "normal"] = "full",
        clock: Callable[[], float] = time.time,
    ) -> None:
        make_private(path.parent)  # the data directory: 0700, its files 0600
        self.path = path
        self._clock = clock
        # isolation_level=None: transactions are ours to begin and commit.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit does not wait for the disk; for "full", WalSync fsyncs the WAL.
        self._db.execute("PRAGMA synchronous=NORMAL")
        if synchronous == "full":  # macOS: a checkpoint's sync reaches past the drive's cache
            self._db.execute("PRAGMA checkpoint_fullfsync=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        for column, statement in OUTBOX_COLUMNS.items():
            if column not in present:
                self._db.execute(statement)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, statement in JOB_COLUMNS_ADDED.items():
            if column not in present:
                self._db.execute(statement)
        for statement in (*OUTBOX_INDEXES, *JOB_INDEXES):
            self._db.execute(statement)
        self._in_tx = False
        self._after: list[Callable[[], None]] = []
        self._hurry = False  # something in `_after` wants its fsync soon (not only acks)
        self._acks = 0  # acknowledgements in `_after`
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lazy_delay = 0.05
        self._soon: asyncio.Handle | None = None  # a commit at the end of this loop iteration
        self._lazy: asyncio.TimerHandle | None = None  # a commit at the end of the lazy delay
        self._gap_wait: asyncio.TimerHandle | None = None  # a commit once the gap has passed
        self._at_sync = False  # commit when the fsync under way is done (`_commit_or_wait`)
        self._gap = 0.0  # the least time from one commit to the next (`group_commits`)
        self._committed_at = float("-inf")  # the loop's time at the last COMMIT
        self._listeners: list[Callable[[], None]] = []
        self._taps: list[Callable[[list[OutboxMessage]], None]] = []
        self._tapped: list[OutboxMessage] = []
        self._events: list[OutboxMessage] = []  # this transaction's QoS 0 messages
        self._events_ready: list[OutboxMessage] = []  # committed ones, for the outbox to send
        self._rows_added = False  # outbox rows written in this transaction
        # The newest outbox row that is durable: no row after it may leave.
        self._durable_row: int = self._db.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
        self._last_row = self._durable_row  # the newest row written (known without a query)
        # Called when writes it took were lost (see `JournalFailed`); without it, raised.
        self.on_failure: Callable[[JournalFailed], object] | None = None
        self._sync = WalSync(
            Path(f"{path}-wal"),
            enabled=synchronous == "full",
            on_durable=self._durable,
            on_failure=self._failed,
        )

    # -- transactions -----------------------------------------------------------------

    def group_commits(
        self, loop: asyncio.AbstractEventLoop | None, *, lazy_delay: float = 0.05, gap: float = COMMIT_GAP
    ) -> None:
        """Group commits on `loop`: writes something waits for (an ack, a publish) are committed
        at the end of the loop iteration, but no sooner than `gap` after the commit before; the
        others ride along or go within `lazy_delay`."""
        self.commit()
        self._loop = loop
        self._gap = gap
        self._lazy_delay = self._sync.lazy_delay = lazy_delay
        self._sync.use_loop(loop)

    @contextmanager
    def _write(self, *, statements: int = 1) -> Iterator[sqlite3.Connection]:
        """One write in the group. A failed write undoes itself, not the others in the group:
        SQLite undoes a failed statement on its own; a write of several takes a savepoint."""
        if not self._in_tx:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_tx = True
        if statements > 1:
            self._db.execute("SAVEPOINT write")
        last_row = self._last_row
        try:
            yield self._db
        except BaseException as exc:
            if isinstance(exc, sqlite3.Error) and not self._db.in_transaction:
                self._lost(exc)  # SQLite undid the whole group, not only this write
            if statements > 1:
                self._last_row = last_row  # its rows are undone: their ids may be given again
                self._db.execute("ROLLBACK TO write")
                self._db.execute("RELEASE write")
            raise
        if statements > 1:
            self._db.execute("RELEASE write")
        if self._loop is None:
            self.commit()
        elif self._lazy is None and self._soon is None and self._gap_wait is None and not self._at_sync:
            self._lazy = self._loop.call_later(self._lazy_delay, self._commit_late)

    def commit(self) -> None:
        """Commit every write so far; what waited for it runs once it is durable."""
        for handle in (self._soon, self._lazy, self._gap_wait):
            if handle is not None:
                handle.cancel()
        self._soon = self._lazy = self._gap_wait = None
        self._at_sync = False
        wrote, last_row = self._in_tx, None
        if self._in_tx:
            if self._rows_added:
                last_row = self._last_row
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._lost(exc)
            if self._loop is not None:
                self._committed_at = self._loop.time()
            self._in_tx = self._rows_added = False
        if self._tapped:
            tapped, self._tapped = self._tapped, []
            for tap in self._taps:
                tap(tapped)
        events, self._events = self._events, []
        callbacks, self._after = self._after, []
        # Rows to publish hurry the fsync; acknowledgements and events wait for company.
        urgent, acks, self._hurry, self._acks = last_row is not None or self._hurry, self._acks, False, 0
        release = functools.partial(self._release, last_row, events)
        self._sync.committed([release, *callbacks], wrote=wrote, urgent=urgent, acks=acks)

    def _commit_late(self) -> None:
        """The lazy delay is over: acknowledgements that waited it out wait no longer for the disk."""
        self._lazy = None
        self._hurry = self._hurry or self._acks > 0
        self._commit_or_wait()

    def _commit_due(self) -> None:
        self._soon = None
        self._commit_or_wait()

    def _gap_over(self) -> None:
        self._gap_wait = None
        self._commit_or_wait()

    def _commit_or_wait(self) -> None:
        """Commit now; while an fsync is under way, once it is done (the next fsync could not
        start before); within `gap` of the commit before, once that has passed. What is written
        meanwhile joins this commit: in a burst, one COMMIT, one set of pages and one fsync
        for the writes of several jobs. `ACKS_SOON` acknowledgements waiting do not wait for the
        gap: a broker sends only so many inputs unacknowledged (wal_sync.py)."""
        assert self._loop is not None
        if self._sync.in_flight:
            self._at_sync = True
            return
        wait = self._committed_at + self._gap - self._loop.time() if self._acks < ACKS_SOON else 0.0
        if wait <= 0:
            self.commit()
        elif self._gap_wait is None:
            self._gap_wait = self._loop.call_later(wait, self._gap_over)

    def _durable(self) -> None:
        for listener in self._listeners:
            listener()
        if self._at_sync:
            self._at_sync = False
            self._commit_or_wait()

    def _lost(self, exc: sqlite3.Error) -> NoReturn:
        """The open transaction could not be kept (a full disk, an I/O error): every write since
        the last commit is gone, and nothing that waited for them may run."""
        if self._db.in_transaction:  # SQLite kept it open: undo it, nothing of it may stay
            self._db.execute("ROLLBACK")
        self._in_tx = self._rows_added = False
        self._after, self._events, self._tapped = [], [], []
        self._hurry, self._acks, self._at_sync = False, 0, False
        self._last_row = self._db.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
        self._failed(JournalFailed(f"the journal {self.path} could not be written: {exc}"))

    def _failed(self, failure: JournalFailed) -> NoReturn:
        if self.on_failure is not None:
            self.on_failure(failure)  # the daemon stops here
        raise failure

    def _release(self, last_row: int | None, events: list[OutboxMessage]) -> None:
        """A commit is durable: its outbox rows and events may leave."""
        if last_row is not None:
            self._durable_row = max(self._durable_row, last_row)
        self._events_ready += events

    def take_events(self) -> list[OutboxMessage]:
        """The QoS 0 messages of committed writes, oldest first; they are the caller's now."""
        ready, self._events_ready = self._events_ready, []
        return ready

    def return_events(self, events: list[OutboxMessage]) -> None:
        """Events the caller could not send yet (no broker): first in line next time."""
        self._events_ready[:0] = events

    def tap_messages(self, tap: Callable[[list[OutboxMessage]], None]) -> None:
        """Show `tap` every outbox message once it is committed (the web console's live view)."""
        self._taps.append(tap)

    def on_every_commit(self, listener: Callable[[], None]) -> None:
        """Call `listener` each time commits became durable (the outbox sends them)."""
        self._listeners.append(listener)

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    @property
    def syncing(self) -> bool:
        """Writes are not durable yet (uncommitted, or their fsync is under way)."""
        return self._in_tx or self._sync.busy

    def after_commit(self, callback: Callable[[], None], *, ack: bool = False) -> None:
        """Run `callback` once everything written so far is durable (soon: someone waits).
        `ack`: it acknowledges an input, which its source holds until then: the commit and its
        fsync may wait for company (up to the lazy delay, or until `ACKS_SOON` acknowledgements
        wait; wal_sync.py)."""
        if self._in_tx:
            self._after.append(callback)
            self._hurry = self._hurry or not ack
            self._acks += ack
            # Acknowledgements alone wait for company here too: the commit that has results to
            # publish, or the lazy delay (unless enough of them wait, as for the fsync).
            if self._hurry or self._acks >= ACKS_SOON:
                self.commit_soon()
        else:  # at once, unless a commit is syncing
            self._sync.committed([callback], wrote=False, urgent=not ack, acks=int(ack))

    def commit_soon(self) -> None:
        """Commit at the end of this loop iteration rather than lazily (or once the gap after the
        commit before has passed, unless `ACKS_SOON` acknowledgements wait)."""
        if self._soon is not None or self._at_sync or not self._in_tx or self._loop is None:
            return
        if self._gap_wait is None or self._acks >= ACKS_SOON:
            self._soon = self._loop.call_soon(self._commit_due)

    def close(self) -> None:
        self.commit()
        self._sync.close()
        self._db.close()

    # -- jobs -------------------------------------------------------------------------

    def add_job(self, job: Job, *, payload_hash: str | None = None) -> None:
        data = dumps(job.input).decode()
        self._grown += len(data)
        with self._write() as db:
            db.execute(records.INSERT_JOB, job_row(job, data, payload_hash))

    def start(self, job_id: str) -> Job:
        """Mark a job running and count the attempt (durably, before the model is called)."""
        job = self._start(job_id, "")
        if job is None:
            raise KeyError(job_id)
        return job

    def start_unless_fetching(self, job_id: str) -> Job | None:
        """`start`, in the same one statement, unless the job is waiting and may have an
        image_url to fetch first: then None and nothing changed (also for an unknown job)."""
        return self._start(job_id, records.MAY_FETCH)

    def _start(self, job_id: str, unless: str) -> Job | None:
        with self._write() as db:
            row = db.execute(
                "UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1"
                f" WHERE id = ?{unless} RETURNING {JOB_COLUMNS}",
                (self._clock(), job_id),
            ).fetchone()
        return job_from_row(row) if row else None

    def attach_image(self, job_id: str, digest: str) -> None:
        """Give a waiting job its image (fetched from its image_url) by content hash."""
        with self._write() as db:
            db.execute("UPDATE jobs SET image = ? WHERE id = ?", (digest, job_id))

    def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        result: dict[str, Any] | bytes | None = None,
        error: str | None = None,
        messages: Iterable[OutboxMessage] = (),
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record the outcome and queue its messages, in one transaction (`result`: the
        result, or its JSON encoded)."""
        messages = list(messages)
        failed = state in ("failed", "dead")
        # A result already encoded (the payload that is published) is stored as it is.
        text = result.decode() if isinstance(result, bytes) else dumps_or_none(result)
        with self._write(statements=1 + any(m.durable for m in messages) + failed) as db:
            db.execute(records.FINISH_JOB, (state, self._clock(), text, error, dumps_or_none(detail), job_id))
            self._add_messages(db, messages, job_id=job_id)
            if failed:  # nobody will look at a failed job's image again: free its space now
                db.execute(DROP_FAILED_BLOB, (job_id, job_id))

    # -- outbox -----------------------------------------------------------------------

    def add_messages(self, messages: Iterable[OutboxMessage]) -> None:
        messages = list(messages)
        if not self._in_tx and not any(m.durable for m in messages):
            self._events_ready += messages  # nothing to wait for: only telemetry
            for tap in self._taps:
                tap(messages)
            return
        with self._write(statements=1 + (len(messages) > records.INSERT_CHUNK)) as db:
            self._add_messages(db, messages)

    def _add_messages(
        self, db: sqlite3.Connection, messages: Iterable[OutboxMessage], *, job_id: str | None = None
    ) -> None:
        now = self._clock()
        messages = list(messages)
        if self._taps:
            self._tapped.extend(m if m.job_id or not job_id else with_job(m, job_id) for m in messages)
        rows: list[Any] = []
        for m in messages:
            if m.durable:
                rows.extend(outbox_row(m, now, job_id))
            else:
                self._events.append(m)
        # One INSERT for a job's rows (result, state, reply), in chunks well below SQLite's
        # limit of bound parameters; the newest id comes back without a query.
        step = records.INSERT_CHUNK * records.OUTBOX_FIELDS
        for at in range(0, len(rows), step):
            chunk = rows[at : at + step]
            values = ", ".join([records.OUTBOX_ROW] * (len(chunk) // records.OUTBOX_FIELDS))
            cursor = db.execute(f"{records.INSERT_OUTBOX} {values}", chunk)
            self._rows_added = True
            self._last_row = cursor.lastrowid or self._last_row
        self._grown += sum(len(m.payload) for m in messages if m.durable)
