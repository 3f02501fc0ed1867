"""What the web console reads back from the journal, on a connection of its own.

The daemon writes the journal on the event loop; the console reads it through a read-only
SQLite connection in one worker thread, so a page never holds up a job, and sees only what
is committed. Lists are pages of at most `MAX_LIMIT` rows, keyset-paginated by job id
(ids sort by time), over the `jobs_rule_id` index and the primary key.
"""

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["queued", "running", "done", "failed", "skipped"]
OUTCOME_STATES: dict[str, tuple[str, ...]] = {
    "queued": ("queued",),
    "running": ("running",),
    "done": ("done",),
    "failed": ("failed", "dead"),
    "skipped": ("skipped", "superseded"),
}
MAX_LIMIT = 200
_LIST_COLUMNS = "id, rule, source, state, created, started, finished, image, result, error, input"


@dataclass(frozen=True)
class JobRow:
    """One job as the console lists it."""

    id: str
    rule: str
    source: str
    state: str
    created: float
    started: float | None
    finished: float | None
    image: str | None
    result: dict[str, Any] | None
    error: str | None
    input: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """The fields a list shows (the API's list item)."""
        result = self.result or {}
        return {
            "job_id": self.id,
            "rule": self.rule,
            "source": self.source,
            "state": self.state,
            "created": self.created,
            "finished": self.finished,
            "answer": answer_text(result),
            "confidence": result.get("confidence"),
            "timings": result.get("timings"),
            "has_image": self.image is not None,
            "text": (self.input.get("text") or "")[:200] or None,
            "error": self.error,
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
    ) -> list[JobRow]:
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
            f"SELECT {_LIST_COLUMNS} FROM jobs{clause} ORDER BY id DESC LIMIT ?",
            (*args, max(1, min(limit, MAX_LIMIT))),
        )
        return [_row(r) for r in rows]

    def job(self, job_id: str) -> tuple[JobRow, dict[str, Any]] | None:
        """A job and its detail (attempt count, the calls sent and answered, each attempt's error)."""
        rows = self._all(f"SELECT {_LIST_COLUMNS}, attempts, detail FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        row = rows[0]
        detail = json.loads(row[12]) if row[12] else {}
        return _row(row[:11]), {"attempts": row[11], **detail}

    def last_done(self, rule: str) -> JobRow | None:
        """The rule's newest finished job with an answer."""
        rows = self._all(
            f"SELECT {_LIST_COLUMNS} FROM jobs WHERE rule = ? AND state = 'done' ORDER BY id DESC LIMIT 1",
            (rule,),
        )
        return _row(rows[0]) if rows else None

    def blob(self, digest: str) -> bytes | None:
        rows = self._all("SELECT data FROM blobs WHERE hash = ?", (digest,))
        return bytes(rows[0][0]) if rows else None

    def image_of(self, job_id: str) -> tuple[str, str] | None:
        """The job's rule and the hash of the image it received, if it kept one."""
        rows = self._all("SELECT rule, image FROM jobs WHERE id = ? AND image IS NOT NULL", (job_id,))
        return (rows[0][0], rows[0][1]) if rows else None


def _row(row: tuple[Any, ...]) -> JobRow:
    return JobRow(
        id=row[0],
        rule=row[1],
        source=row[2],
        state=row[3],
        created=row[4],
        started=row[5],
        finished=row[6],
        image=row[7],
        result=json.loads(row[8]) if row[8] else None,
        error=row[9],
        input=json.loads(row[10]) if row[10] else {},
    )
