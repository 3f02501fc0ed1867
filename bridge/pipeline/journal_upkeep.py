"""The journal's queries, upkeep and smaller tables: jobs and images by id, open jobs, counts,
a rule's last result, outbox rows to send and delivered, pruning, its size on disk, dropping
old images, requesters waiting for another request's job. A part of `Journal`, kept apart
for length."""

import hashlib
import json
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bridge.pipeline.records import JOB_COLUMNS, Job, OpenJob, OutboxMessage, job_from_row, message_from_row

# Rows per DELETE of delivered outbox rows, well below SQLite's limit of bound parameters.
_DELETE_CHUNK = 500


class JournalUpkeep:
    """Methods `Journal` inherits; they use only its connection and its writes."""

    _db: sqlite3.Connection
    _clock: Callable[[], float] = time.time
    _durable_row = 0  # the newest outbox row that is durable
    _page_size = 0  # fixed for a database once created: read once per connection
    _measured: tuple[float, int] | None = None  # when (monotonic) the size was read, and the size
    _grown = 0  # bytes of images, inputs and outbox payloads written since
    _free: tuple[float, int] | None = None  # when (monotonic) free space was read, and how much
    path: Path

    def _write(self, *, statements: int = 1) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def _add_messages(
        self, db: sqlite3.Connection, messages: Iterable[OutboxMessage], *, job_id: str | None = None
    ) -> None:
        raise NotImplementedError

    def get(self, job_id: str) -> Job | None:
        row = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return job_from_row(row) if row else None

    def get_blob(self, digest: str) -> bytes:
        row = self._db.execute("SELECT data FROM blobs WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            raise KeyError(f"image {digest[:12]} is missing from the journal")
        return bytes(row[0])

    def put_blob(self, data: bytes) -> str:
        """Store bytes once by content hash; returns the hash."""
        digest = hashlib.sha256(data).hexdigest()
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO blobs (hash, data, created) VALUES (?, ?, ?)",
                (digest, data, self._clock()),
            )
        self._grown += len(data)
        return digest

    def requeue(
        self, job_id: str, *, not_before: float, error: str | None = None, refund: bool = False
    ) -> None:
        """Put a job back to wait: after a fault, or (`refund`: not counted) on a stop mid-job."""
        with self._write(statements=2) as db:
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

    def outputs_pending(self, job_id: str) -> int:
        """Outbox rows of this job not yet delivered."""
        return int(self._db.execute("SELECT count(*) FROM outbox WHERE job_id = ?", (job_id,)).fetchone()[0])

    def last_done(self, rule: str) -> Job | None:
        """The rule's most recently finished successful job."""
        row = self._db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE rule = ? AND state = 'done' AND result IS NOT NULL"
            " ORDER BY finished DESC LIMIT 1",
            (rule,),
        ).fetchone()
        return job_from_row(row) if row else None

    def previous_state(self, rule: str, job_id: str) -> str | None:
        """The `state` of the rule's last finished job before `job_id` (for "only on change")."""
        row = self._db.execute(
            "SELECT json_extract(result, '$.state') FROM jobs WHERE rule = ? AND state = 'done'"
            " AND id < ? AND result IS NOT NULL ORDER BY id DESC LIMIT 1",
            (rule, job_id),
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def outbox_size(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def prune(self, retention: float) -> int:
        """Delete finished jobs older than `retention` seconds, and images no job uses."""
        cutoff = self._clock() - retention
        with self._write(statements=2) as db:
            removed = db.execute(
                "DELETE FROM jobs WHERE finished IS NOT NULL AND finished < ?", (cutoff,)
            ).rowcount
            db.execute(
                "DELETE FROM blobs WHERE created < ? AND NOT EXISTS"
                " (SELECT 1 FROM jobs WHERE jobs.image = blobs.hash)",
                (cutoff,),
            )
        return removed

    def size(self, *, max_age: float = 0.0) -> int:
        """Bytes the journal's data takes (free pages, which SQLite reuses, not counted).

        `max_age`: a reading up to that many seconds old will do, with the bytes written since
        added (what intake asks per input: no query per job)."""
        now = time.monotonic()
        if self._measured is not None and now - self._measured[0] <= max_age:
            return self._measured[1] + self._grown
        if not self._page_size:
            self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        pages = self._db.execute(
            "SELECT p.page_count - f.freelist_count FROM pragma_page_count() p, pragma_freelist_count() f"
        ).fetchone()[0]
        self._measured, self._grown = (now, int(pages) * self._page_size), 0
        return self._measured[1]

    def free_space(self, *, max_age: float = 0.0) -> int:
        """Bytes free for this process on the journal's file system (a reading up to `max_age`
        seconds old will do: one statfs a second, not one per input)."""
        now = time.monotonic()
        if self._free is None or now - self._free[0] > max_age:
            self._free = (now, shutil.disk_usage(self.path.parent).free)
        return self._free[1]

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

    # -- jobs -------------------------------------------------------------------------------

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

    # -- outbox rows ----------------------------------------------------------------------

    @property
    def durable_row(self) -> int:
        """The newest outbox row that is durable: rows up to it may leave, none after it."""
        return self._durable_row

    def pending_messages(
        self, after: int = 0, limit: int = 500, *, mqtt: bool | None = None
    ) -> list[OutboxMessage]:
        """Durable rows after `after`, oldest first; `mqtt` True: only MQTT rows, False: others."""
        where = "" if mqtt is None else (" AND sink = 'mqtt'" if mqtt else " AND sink != 'mqtt'")
        rows = self._db.execute(
            "SELECT id, topic, payload, qos, retain, props, sink, job_id FROM outbox"
            f" WHERE id > ? AND id <= ?{where} ORDER BY id LIMIT ?",
            (after, self._durable_row, limit),
        ).fetchall()
        return [message_from_row(row) for row in rows]

    def delete_messages(self, ids: Iterable[int]) -> None:
        """Delete delivered rows: one statement per few hundred rows, not one per row."""
        ids = list(ids)
        for at in range(0, len(ids), _DELETE_CHUNK):
            chunk = ids[at : at + _DELETE_CHUNK]
            with self._write() as db:
                db.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)

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
        with self._write(statements=2) as db:
            db.execute("DELETE FROM waiters WHERE job_id = ?", (job_id,))
            self._add_messages(db, messages)
