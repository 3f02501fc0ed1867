"""The built-in Todo list: SQLite in the data directory, with a history of every change.

Every change the bridge or the REST API makes is a row in `history` (the task before and
after), so any one can be undone. Notes that changed the list are remembered by key in
`notes`, in the same transaction as the change, so a redelivered note changes nothing twice.
"""

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from bridge.pipeline.results import iso
from bridge.todo.normalize import contains

Status = Literal["needs_action", "completed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    uid         TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    genre       TEXT,
    status      TEXT NOT NULL,
    due         TEXT,
    description TEXT,
    needs_confirmation INTEGER NOT NULL DEFAULT 0,
    created     REAL NOT NULL,
    updated     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        REAL NOT NULL,
    uid       TEXT NOT NULL,
    action    TEXT NOT NULL,
    before    TEXT,
    after     TEXT,
    source    TEXT NOT NULL,
    note      TEXT,
    undone_by INTEGER
);
CREATE INDEX IF NOT EXISTS history_uid ON history (uid);
CREATE TABLE IF NOT EXISTS notes (
    key     TEXT PRIMARY KEY,
    ts      REAL NOT NULL,
    outcome TEXT NOT NULL
);
"""


_TIMES = ("created", "updated", "ts")


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A task or change as shown outside (REST, MQTT): times as ISO 8601, like every result."""
    out = dict(record)
    for key in _TIMES:
        if isinstance(out.get(key), int | float):
            out[key] = iso(out[key])
    for key in ("before", "after"):
        if isinstance(out.get(key), dict):
            out[key] = public(out[key])
    return out


class TodoError(Exception):
    """A change the list cannot make; the message says why (unknown uid, bad genre...)."""


class TodoNotSaved(TodoError):
    """The disk did not keep a change (full, or failing): nothing of it was kept."""


@dataclass(frozen=True)
class Task:
    """One task of the list."""

    uid: str
    title: str
    genre: str | None
    status: Status
    due: str | None
    description: str | None
    needs_confirmation: bool
    created: float
    updated: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Change:
    """One recorded change: what the task was before and after (None for none)."""

    id: int
    ts: float
    uid: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: str
    note: str | None = None
    undone_by: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_uid() -> str:
    return secrets.token_hex(8)


class TodoStore:
    """Tasks, their history and the applied notes, in one SQLite file."""

    def __init__(
        self, path: Path, *, genres: list[str] | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.genres = list(genres or [])
        self._clock = clock
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # Each commit is synced (synchronous FULL, SQLite's default); on macOS with F_FULLFSYNC,
        # since a plain fsync there leaves the data in the drive's cache (bridge/pipeline/wal_sync.py).
        self._db.execute("PRAGMA fullfsync=ON")
        self._db.executescript(_SCHEMA)
        self._depth = 0
        self._pending: list[tuple[Task | None, Task | None]] = []  # changes awaiting the commit
        self._listeners: list[Callable[[Task | None, Task | None], None]] = []

    def close(self) -> None:
        self._db.close()

    def on_change(self, listener: Callable[[Task | None, Task | None], None]) -> None:
        """Call `listener(before, after)` after every committed change (to keep an index current)."""
        self._listeners.append(listener)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group changes: all or none are kept. Nested uses join the outer transaction."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
                self._pending = []
            raise
        self._depth -= 1
        if self._depth == 0:
            pending, self._pending = self._pending, []
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:  # a full disk, an I/O error: nothing of it was kept
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise TodoNotSaved(f"it could not be saved ({exc})") from exc
            for before, after in pending:
                for listener in self._listeners:
                    listener(before, after)

    # -- reading ------------------------------------------------------------------------

    def get(self, uid: str) -> Task | None:
        row = self._db.execute("SELECT * FROM tasks WHERE uid = ?", (uid,)).fetchone()
        return _task(row) if row else None

    def tasks(
        self,
        *,
        status: Status | None = None,
        genre: str | None = None,
        query: str | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        """Tasks, newest change first, filtered by status, genre and `query`: a part of the title
        in any spelling note matching uses (width, case, kana, kanji readings, romaji)."""
        sql, args = "SELECT * FROM tasks WHERE 1=1", list[str]()
        if status:
            sql += " AND status = ?"
            args.append(status)
        if genre:
            sql += " AND genre = ?"
            args.append(genre)
        sql += " ORDER BY updated DESC, uid"
        if limit and not query:
            sql += f" LIMIT {int(limit)}"
        found = [_task(row) for row in self._db.execute(sql, args)]
        if query:
            found = [task for task in found if contains(task.title, query)][: limit or None]
        return found

    def history(self, uid: str | None = None, limit: int = 100) -> list[Change]:
        sql, args = "SELECT * FROM history", list[str]()
        if uid:
            sql += " WHERE uid = ?"
            args.append(uid)
        sql += f" ORDER BY id DESC LIMIT {int(limit)}"
        return [_change(row) for row in self._db.execute(sql, args)]

    def change(self, change_id: int) -> Change | None:
        row = self._db.execute("SELECT * FROM history WHERE id = ?", (change_id,)).fetchone()
        return _change(row) if row else None

    def note_outcome(self, key: str) -> dict[str, Any] | None:
        """What the note with this key did, if it was applied already."""
        row = self._db.execute("SELECT outcome FROM notes WHERE key = ?", (key,)).fetchone()
        return json.loads(row["outcome"]) if row else None

    # -- changing -----------------------------------------------------------------------

    def check_genre(self, genre: str | None) -> None:
        if genre is not None and self.genres and genre not in self.genres:
            raise TodoError(f"genre {genre!r} is not one of {', '.join(self.genres)}")

    def create(
        self,
        title: str,
        *,
        genre: str | None = None,
        due: str | None = None,
        description: str | None = None,
        needs_confirmation: bool = False,
        source: str,
        note: str | None = None,
    ) -> Change:
        title = title.strip()
        if not title:
            raise TodoError("a task needs a title")
        self.check_genre(genre)
        now = self._clock()
        task = Task(new_uid(), title, genre, "needs_action", due, description, needs_confirmation, now, now)
        with self.transaction():
            self._put(task)
            return self._record("create", None, task, source, note)

    def update(self, uid: str, *, source: str, note: str | None = None, **fields: Any) -> Change:
        """Change some of title, genre, status, due, description, needs_confirmation."""
        allowed = {"title", "genre", "status", "due", "description", "needs_confirmation"}
        unknown = set(fields) - allowed
        if unknown:
            raise TodoError(f"unknown task field(s): {', '.join(sorted(unknown))}")
        if "genre" in fields:
            self.check_genre(fields["genre"])
        if "title" in fields and not str(fields["title"]).strip():
            raise TodoError("a task needs a title")
        if fields.get("status", "needs_action") not in ("needs_action", "completed"):
            raise TodoError("status is needs_action or completed")
        with self.transaction():
            before = self._existing(uid)
            after = replace(before, **fields, updated=self._clock())
            action = "complete" if fields.get("status") == "completed" != before.status else "update"
            self._put(after)
            return self._record(action, before, after, source, note)

    def complete(self, uid: str, *, source: str, note: str | None = None) -> Change:
        return self.update(uid, status="completed", source=source, note=note)

    def delete(self, uid: str, *, source: str) -> Change:
        """Only people delete (through the REST API); notes never do."""
        with self.transaction():
            before = self._existing(uid)
            self._db.execute("DELETE FROM tasks WHERE uid = ?", (uid,))
            return self._record("delete", before, None, source, None)

    def undo(self, change_id: int, *, source: str) -> Change:
        """Put the task back as it was before change `change_id`; recorded as a change itself."""
        with self.transaction():
            change = self.change(change_id)
            if change is None:
                raise TodoError(f"no change {change_id}")
            if change.undone_by is not None:
                raise TodoError(f"change {change_id} was already undone by change {change.undone_by}")
            current = self.get(change.uid)
            if change.before is None:
                if current is not None:
                    self._db.execute("DELETE FROM tasks WHERE uid = ?", (change.uid,))
                restored = None
            else:
                restored = replace(Task(**change.before), updated=self._clock())
                self._put(restored)
            undo = self._record("undo", current, restored, source, None)
            self._db.execute("UPDATE history SET undone_by = ? WHERE id = ?", (undo.id, change_id))
            return undo

    def remember_note(self, key: str, outcome: dict[str, Any]) -> None:
        """Record that a note was applied; raises TodoError if it already was."""
        try:
            self._db.execute(
                "INSERT INTO notes (key, ts, outcome) VALUES (?, ?, ?)",
                (key, self._clock(), json.dumps(outcome, ensure_ascii=False)),
            )
        except sqlite3.IntegrityError:
            raise TodoError(f"note {key!r} was already applied") from None

    def _existing(self, uid: str) -> Task:
        task = self.get(uid)
        if task is None:
            raise TodoError(f"no task with uid {uid!r}")
        return task

    def _put(self, task: Task) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task.uid,
                task.title,
                task.genre,
                task.status,
                task.due,
                task.description,
                int(task.needs_confirmation),
                task.created,
                task.updated,
            ),
        )

    def _record(
        self, action: str, before: Task | None, after: Task | None, source: str, note: str | None
    ) -> Change:
        subject = after or before
        uid = subject.uid if subject else ""
        now = self._clock()
        cursor = self._db.execute(
            "INSERT INTO history (ts, uid, action, before, after, source, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                now,
                uid,
                action,
                json.dumps(before.as_dict(), ensure_ascii=False) if before else None,
                json.dumps(after.as_dict(), ensure_ascii=False) if after else None,
                source,
                note,
            ),
        )
        self._pending.append((before, after))
        return Change(
            int(cursor.lastrowid or 0),
            now,
            uid,
            action,
            before.as_dict() if before else None,
            after.as_dict() if after else None,
            source,
            note,
        )


def _task(row: sqlite3.Row) -> Task:
    data = dict(row)
    data["needs_confirmation"] = bool(data["needs_confirmation"])
    return Task(**data)


def _change(row: sqlite3.Row) -> Change:
    data = dict(row)
    for key in ("before", "after"):
        data[key] = json.loads(data[key]) if data[key] else None
    return Change(**data)
