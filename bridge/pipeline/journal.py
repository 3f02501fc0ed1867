"""The durable journal: jobs, their images (stored once by content hash) and the outbox.

SQLite in WAL mode. Writes made while the event loop runs are grouped: they go into one open
transaction that is committed once per loop iteration (group commit), and whatever must wait
for durability (acknowledging an MQTT message, publishing from the outbox) is registered with
`after_commit`. Without a loop (the CLI, tests) every write commits at once.
"""

import asyncio
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

JobState = Literal["queued", "running", "done", "failed", "dead", "skipped", "superseded"]
FINAL_STATES = ("done", "failed", "dead", "skipped", "superseded")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    hash    TEXT PRIMARY KEY,
    data    BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    rule         TEXT NOT NULL,
    source       TEXT NOT NULL,
    state        TEXT NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    created      REAL NOT NULL,
    started      REAL,
    finished     REAL,
    not_before   REAL NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    dedupe_key   TEXT,
    payload_hash TEXT,
    image        TEXT,
    input        TEXT NOT NULL,
    result       TEXT,
    error        TEXT
);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs (state) WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_dedupe ON jobs (rule, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_payload ON jobs (rule, payload_hash, created);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished) WHERE finished IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_image ON jobs (image) WHERE image IS NOT NULL;
CREATE TABLE IF NOT EXISTS waiters (
    job_id  TEXT NOT NULL,
    reply   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL,
    props   TEXT,
    created REAL NOT NULL
);
"""

# Columns added after the first release: which sink delivers a row (mqtt, sns, sqs) and the
# job whose outcome it carries (so a source can wait until all of a job's outputs are out).
_OUTBOX_COLUMNS = {
    "sink": "ALTER TABLE outbox ADD COLUMN sink TEXT NOT NULL DEFAULT 'mqtt'",
    "job_id": "ALTER TABLE outbox ADD COLUMN job_id TEXT",
}
_OUTBOX_INDEXES = (
    "CREATE INDEX IF NOT EXISTS outbox_sink ON outbox (sink, id)",
    "CREATE INDEX IF NOT EXISTS outbox_job ON outbox (job_id) WHERE job_id IS NOT NULL",
)
# `detail`: what the web console's job page shows and results do not carry (the prompt and
# schema sent, the model's raw answers, each attempt's error), written by the finishing write.
_JOB_COLUMNS_ADDED = {"detail": "ALTER TABLE jobs ADD COLUMN detail TEXT"}
# A rule's history, newest first, page by page (job ids sort by time): the web console.
_JOB_INDEXES = ("CREATE INDEX IF NOT EXISTS jobs_rule_id ON jobs (rule, id)",)


@dataclass(frozen=True)
class Job:
    """A job as the journal holds it. `input` is JSON-able: text, fields, image_url, reply."""

    id: str
    rule: str
    source: str
    state: JobState
    priority: int
    created: float
    attempts: int
    input: dict[str, Any]
    image: str | None = None
    started: float | None = None
    finished: float | None = None
    not_before: float = 0.0
    result: dict[str, Any] | None = None
    error: str | None = None
    dedupe_key: str | None = None


@dataclass(frozen=True)
class OutboxMessage:
    """A message waiting to be published. `props` holds MQTT 5 response data.

    `sink` says who delivers it: "mqtt" (the topic is an MQTT topic), "sns" (a topic ARN),
    "sqs" (a queue URL). `job_id` is set for the messages that finish a job.
    """

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    props: dict[str, Any] | None = None
    id: int = 0
    sink: str = "mqtt"
    job_id: str | None = None


@dataclass(frozen=True)
class OpenJob:
    """The little the scheduler keeps in memory for a waiting job."""

    id: str
    rule: str
    priority: int
    created: float
    not_before: float


class Journal:
    """Jobs, blobs and outbox in one SQLite database."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["full", "normal"] = "full",
        clock: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        # isolation_level=None: transactions are ours to begin and commit.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        for column, statement in _OUTBOX_COLUMNS.items():
            if column not in present:
                self._db.execute(statement)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, statement in _JOB_COLUMNS_ADDED.items():
            if column not in present:
                self._db.execute(statement)
        for statement in (*_OUTBOX_INDEXES, *_JOB_INDEXES):
            self._db.execute(statement)
        self._in_tx = False
        self._after: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lazy_delay = 0.05
        self._soon: asyncio.Handle | None = None
        self._lazy: asyncio.TimerHandle | None = None
        self._listeners: list[Callable[[], None]] = []
        self._taps: list[Callable[[list[OutboxMessage]], None]] = []
        self._tapped: list[OutboxMessage] = []

    # -- transactions -----------------------------------------------------------------

    def group_commits(self, loop: asyncio.AbstractEventLoop | None, *, lazy_delay: float = 0.05) -> None:
        """Group commits on `loop`: writes something waits for (an ack, a publish) are committed
        at the end of the loop iteration; the others ride along or go within `lazy_delay`."""
        self.commit()
        self._loop = loop
        self._lazy_delay = lazy_delay

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if not self._in_tx:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_tx = True
        # A savepoint per write: a failed write undoes itself, not the others in the group.
        self._db.execute("SAVEPOINT write")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK TO write")
            self._db.execute("RELEASE write")
            raise
        self._db.execute("RELEASE write")
        if self._loop is None:
            self.commit()
        elif self._lazy is None and self._soon is None:
            self._lazy = self._loop.call_later(self._lazy_delay, self.commit)

    def commit(self) -> None:
        """Make every write so far durable, then run what waited for it."""
        for handle in (self._soon, self._lazy):
            if handle is not None:
                handle.cancel()
        self._soon = self._lazy = None
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False
        callbacks, self._after = self._after, []
        for callback in [*callbacks, *self._listeners]:
            callback()
        if self._tapped:
            tapped, self._tapped = self._tapped, []
            for tap in self._taps:
                tap(tapped)

    def tap_messages(self, tap: Callable[[list[OutboxMessage]], None]) -> None:
        """Show `tap` every outbox message once it is committed (the web console's live view)."""
        self._taps.append(tap)

    def on_every_commit(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each commit (the outbox sends what became durable)."""
        self._listeners.append(listener)

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything written so far is durable (soon: someone waits)."""
        if not self._in_tx:
            callback()
            return
        self._after.append(callback)
        self.commit_soon()

    def commit_soon(self) -> None:
        """Commit at the end of this loop iteration rather than lazily."""
        if self._in_tx and self._loop is not None and self._soon is None:
            self._soon = self._loop.call_soon(self.commit)

    def close(self) -> None:
        self.commit()
        self._db.close()

    # -- blobs ------------------------------------------------------------------------

    def put_blob(self, data: bytes) -> str:
        """Store bytes once by content hash; returns the hash."""
        digest = hashlib.sha256(data).hexdigest()
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO blobs (hash, data, created) VALUES (?, ?, ?)",
                (digest, data, self._clock()),
            )
        return digest

    def get_blob(self, digest: str) -> bytes:
        row = self._db.execute("SELECT data FROM blobs WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            raise KeyError(f"image {digest[:12]} is missing from the journal")
        return bytes(row[0])

    # -- jobs -------------------------------------------------------------------------

    def add_job(self, job: Job, *, payload_hash: str | None = None) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO jobs (id, rule, source, state, priority, created, started, finished,"
                " not_before, attempts, dedupe_key, payload_hash, image, input, result, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.rule,
                    job.source,
                    job.state,
                    job.priority,
                    job.created,
                    job.started,
                    job.finished,
                    job.not_before,
                    job.attempts,
                    job.dedupe_key,
                    payload_hash,
                    job.image,
                    json.dumps(job.input, ensure_ascii=False),
                    _dumps(job.result),
                    job.error,
                ),
            )

    def find_duplicate(
        self, rule: str, *, dedupe_key: str | None, payload_hash: str | None, window: float
    ) -> str | None:
        """A job this input duplicates: same `id` ever, or same payload recently or still open."""
        if dedupe_key is not None:
            row = self._db.execute(
                "SELECT id FROM jobs WHERE rule = ? AND dedupe_key = ? LIMIT 1", (rule, dedupe_key)
            ).fetchone()
            return row[0] if row else None
        if payload_hash is None:
            return None
        row = self._db.execute(
            "SELECT id FROM jobs WHERE rule = ? AND payload_hash = ?"
            " AND (created >= ? OR state IN ('queued', 'running')) AND state != 'skipped'"
            " ORDER BY created DESC LIMIT 1",
            (rule, payload_hash, self._clock() - window),
        ).fetchone()
        return row[0] if row else None

    def get(self, job_id: str) -> Job | None:
        row = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return job_from_row(row) if row else None

    def start(self, job_id: str) -> Job:
        """Mark a job running and count the attempt (durably, before the model is called)."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1 WHERE id = ?",
                (self._clock(), job_id),
            )
        job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        messages: Iterable[OutboxMessage] = (),
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record the outcome and queue its messages, in one transaction."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = ?, finished = ?, result = ?, error = ?,"
                " detail = CASE WHEN ?5 IS NULL THEN detail ELSE json_patch(coalesce(detail, '{}'), ?5) END"
                " WHERE id = ?6",
                (state, self._clock(), _dumps(result), error, _dumps(detail), job_id),
            )
            self._add_messages(db, messages, job_id=job_id)
            if state in ("failed", "dead"):
                # Nobody will look at a failed job's image again: free its space now.
                db.execute(_DROP_FAILED_BLOB, (job_id, job_id))

    def requeue(
        self, job_id: str, *, not_before: float, error: str | None = None, refund: bool = False
    ) -> None:
        """Put a job back to wait: after a fault, or (`refund`: not counted) on a stop mid-job."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = 'queued', not_before = ?, error = ?,"
                " attempts = attempts - ? WHERE id = ?",
                (not_before, error, int(refund), job_id),
            )
            if error is not None and not refund:
                # Each attempt's error, for the web console's job page (`error` keeps the last).
                db.execute(
                    "UPDATE jobs SET detail = json_insert(coalesce(detail, '{\"errors\": []}'),"
                    " '$.errors[#]', json_object('attempt', attempts, 'error', ?, 'ts', ?)) WHERE id = ?",
                    (error, self._clock(), job_id),
                )

    def open_jobs(self) -> list[OpenJob]:
        """Queued and running jobs (running ones were cut off by a stop or a crash)."""
        rows = self._db.execute(
            "SELECT id, rule, priority, created, not_before FROM jobs"
            " WHERE state IN ('queued', 'running') ORDER BY created"
        ).fetchall()
        return [OpenJob(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        return {state: n for state, n in rows}

    def prune(self, retention: float) -> int:
        """Delete finished jobs older than `retention` seconds, and images no job uses."""
        cutoff = self._clock() - retention
        with self._write() as db:
            removed = db.execute(
                "DELETE FROM jobs WHERE finished IS NOT NULL AND finished < ?", (cutoff,)
            ).rowcount
            db.execute(
                "DELETE FROM blobs WHERE created < ? AND NOT EXISTS"
                " (SELECT 1 FROM jobs WHERE jobs.image = blobs.hash)",
                (cutoff,),
            )
        return removed

    def size(self) -> int:
        """Bytes the journal's data takes (free pages, which SQLite reuses, not counted)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * page_size)

    def drop_finished_images(self, target: int) -> int:
        """Delete images that only finished jobs use, oldest first, until the data is under
        `target` bytes; the jobs themselves stay (their ids still dedupe). Returns how many."""
        dropped = 0
        while self.size() > target:
            with self._write() as db:
                removed = db.execute(
                    "DELETE FROM blobs WHERE hash IN (SELECT hash FROM blobs WHERE NOT EXISTS"
                    " (SELECT 1 FROM jobs WHERE jobs.image = blobs.hash AND jobs.finished IS NULL)"
                    " ORDER BY created LIMIT 50)"
                ).rowcount
            self.commit()
            if not removed:
                break
            dropped += removed
        return dropped

    # -- requesters waiting for another request's job ------------------------------------

    def add_waiter(self, job_id: str, reply: dict[str, Any]) -> None:
        """Someone asked again while `job_id` runs; `reply` is where its answer goes too."""
        with self._write() as db:
            db.execute("INSERT INTO waiters (job_id, reply) VALUES (?, ?)", (job_id, json.dumps(reply)))

    def waiters(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for job_id, reply in self._db.execute("SELECT job_id, reply FROM waiters ORDER BY rowid"):
            found.setdefault(job_id, []).append(json.loads(reply))
        return found

    def remove_waiters(self, job_id: str, messages: Iterable[OutboxMessage]) -> None:
        """The job finished: queue the answers to its waiters and forget them, in one transaction."""
        with self._write() as db:
            db.execute("DELETE FROM waiters WHERE job_id = ?", (job_id,))
            self._add_messages(db, messages)

    # -- outbox -----------------------------------------------------------------------

    def add_messages(self, messages: Iterable[OutboxMessage]) -> None:
        with self._write() as db:
            self._add_messages(db, messages)

    def _add_messages(
        self, db: sqlite3.Connection, messages: Iterable[OutboxMessage], *, job_id: str | None = None
    ) -> None:
        now = self._clock()
        messages = list(messages)
        db.executemany(
            "INSERT INTO outbox (topic, payload, qos, retain, props, created, sink, job_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (m.topic, m.payload, m.qos, int(m.retain), _dumps(m.props), now, m.sink, m.job_id or job_id)
                for m in messages
            ],
        )
        if self._taps:
            self._tapped.extend(m if m.job_id or not job_id else _with_job(m, job_id) for m in messages)

    def pending_messages(
        self, after: int = 0, limit: int = 500, *, mqtt: bool | None = None
    ) -> list[OutboxMessage]:
        """Rows after `after`, oldest first; `mqtt` True: only MQTT rows, False: only other sinks."""
        where = "" if mqtt is None else (" AND sink = 'mqtt'" if mqtt else " AND sink != 'mqtt'")
        rows = self._db.execute(
            "SELECT id, topic, payload, qos, retain, props, sink, job_id FROM outbox"
            f" WHERE id > ?{where} ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [
            OutboxMessage(
                id=row[0],
                topic=row[1],
                payload=bytes(row[2]),
                qos=row[3],
                retain=bool(row[4]),
                props=json.loads(row[5]) if row[5] else None,
                sink=row[6],
                job_id=row[7],
            )
            for row in rows
        ]

    def outputs_pending(self, job_id: str) -> int:
        """Outbox rows of this job not yet delivered."""
        return int(self._db.execute("SELECT count(*) FROM outbox WHERE job_id = ?", (job_id,)).fetchone()[0])

    def previous_state(self, rule: str, job_id: str) -> str | None:
        """The `state` of the rule's last finished job before `job_id` (for "only on change")."""
        row = self._db.execute(
            "SELECT json_extract(result, '$.state') FROM jobs WHERE rule = ? AND state = 'done'"
            " AND id < ? AND result IS NOT NULL ORDER BY id DESC LIMIT 1",
            (rule, job_id),
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def last_done(self, rule: str) -> Job | None:
        """The rule's last finished job that has a result."""
        row = self._db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE rule = ? AND state = 'done' AND result IS NOT NULL"
            " ORDER BY finished DESC LIMIT 1",
            (rule,),
        ).fetchone()
        return job_from_row(row) if row else None

    def delete_messages(self, ids: Iterable[int]) -> None:
        with self._write() as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def outbox_size(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])


_DROP_FAILED_BLOB = (
    "DELETE FROM blobs WHERE hash = (SELECT image FROM jobs WHERE id = ?) AND NOT EXISTS"
    " (SELECT 1 FROM jobs WHERE jobs.image = blobs.hash AND jobs.id != ?"
    " AND jobs.state NOT IN ('failed', 'dead'))"
)

JOB_COLUMNS = (
    "id, rule, source, state, priority, created, attempts, input, image, started, finished,"
    " not_before, result, error, dedupe_key"
)


def job_from_row(row: tuple[Any, ...]) -> Job:
    return Job(
        id=row[0],
        rule=row[1],
        source=row[2],
        state=row[3],
        priority=row[4],
        created=row[5],
        attempts=row[6],
        input=json.loads(row[7]),
        image=row[8],
        started=row[9],
        finished=row[10],
        not_before=row[11],
        result=json.loads(row[12]) if row[12] else None,
        error=row[13],
        dedupe_key=row[14],
    )


def _with_job(message: OutboxMessage, job_id: str) -> OutboxMessage:
    return OutboxMessage(**{**message.__dict__, "job_id": job_id})


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)
