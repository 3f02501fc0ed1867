"""What the web console reads back from the journal, on a connection of its own.

The daemon writes the journal on the event loop; the console reads it through a read-only
SQLite connection in one worker thread, so a page never holds up a job, and sees only what
is committed. Lists are pages of at most `MAX_LIMIT` rows, keyset-paginated by job id
(ids sort by time), over the `jobs_rule_id` index and the primary key.
"""

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Literal

from bridge.pipeline.journal import JOB_COLUMNS, Job, job_from_row

Outcome = Literal["queued", "running", "done", "failed", "skipped"]
OUTCOME_STATES: dict[str, tuple[str, ...]] = {
    "queued": ("queued",),
    "running": ("running",),
    "done": ("done",),
    "failed": ("failed", "dead"),
    "skipped": ("skipped", "superseded"),
}
MAX_LIMIT = 200


def job_summary(job: Job) -> dict[str, Any]:
    """The fields a list shows (the API's list item)."""
    result = job.result or {}
    return {
        "job_id": job.id,
        "rule": job.rule,
        "source": job.source,
        "state": job.state,
        "created": job.created,
        "finished": job.finished,
        "answer": answer_text(result),
        "confidence": result.get("confidence"),
        "timings": result.get("timings"),
        "has_image": job.image is not None,
        "text": (job.input.get("text") or "")[:200] or None,
        "error": job.error,
    }


def answer_text(result: dict[str, Any]) -> str | None:
    """The answer in a word or a line: the state, else the label, description or data."""
    for key in ("state", "label", "description", "applied"):
        if result.get(key) not in (None, ""):
            return str(result[key])
    if "answer" in result:
        return "yes" if result["answer"] else "no"
    if "data" in result:
        return json.dumps(result["data"], ensure_ascii=False)[:200]
    return None


class JournalView:
    """Read-only queries over the journal file."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._db.execute("PRAGMA query_only = ON")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def jobs(
        self,
        *,
        rule: str | None = None,
        outcome: Outcome | None = None,
        before: str | None = None,
        limit: int = 50,
        with_image: bool = False,
    ) -> list[Job]:
        """Newest first; `before` is the last id of the previous page."""
        where, args = [], []
        if rule is not None:
            where.append("rule = ?")
            args.append(rule)
        if outcome is not None:
            states = OUTCOME_STATES[outcome]
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if with_image:
            where.append("image IS NOT NULL")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._all(
            f"SELECT {JOB_COLUMNS} FROM jobs{clause} ORDER BY id DESC LIMIT ?",
            (*args, max(1, min(limit, MAX_LIMIT))),
        )
        return [job_from_row(r) for r in rows]

    def job(self, job_id: str) -> tuple[Job, dict[str, Any]] | None:
        """A job and its detail (the calls sent and answered, each attempt's error)."""
        rows = self._all(f"SELECT {JOB_COLUMNS}, detail FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        *columns, detail = rows[0]
        return job_from_row(tuple(columns)), json.loads(detail) if detail else {}

    def last_done(self, rule: str) -> Job | None:
        """The rule's newest finished job with an answer."""
        rows = self._all(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE rule = ? AND state = 'done' ORDER BY id DESC LIMIT 1",
            (rule,),
        )
        return job_from_row(rows[0]) if rows else None

    def blob(self, digest: str) -> bytes | None:
        rows = self._all("SELECT data FROM blobs WHERE hash = ?", (digest,))
        return bytes(rows[0][0]) if rows else None

    def image_of(self, job_id: str) -> tuple[str, str] | None:
        """The job's rule and the hash of the image it received, if it kept one."""
        rows = self._all("SELECT rule, image FROM jobs WHERE id = ? AND image IS NOT NULL", (job_id,))
        return (rows[0][0], rows[0][1]) if rows else None
