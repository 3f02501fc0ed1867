"""A journal whose writes are lost (SQLite rolled the group back: a full disk, an I/O error):
nothing that waited for them runs, and whoever owns the journal is told (the daemon stops)."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bridge.pipeline.journal import Job, Journal, JournalFailed, OutboxMessage
from tests.support.disk import files_cannot_grow


def _job(ident: str) -> Job:
    return Job(
        id=ident, rule="r", source="test", state="queued", priority=0, created=1.0, attempts=0, input={}
    )


def test_a_group_sqlite_rolled_back_runs_nothing_that_waited_and_is_reported(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path / "j.sqlite3")
        journal.group_commits(asyncio.get_running_loop())
        failures: list[JournalFailed] = []
        journal.on_failure = failures.append
        ran: list[str] = []
        journal.add_job(_job("first"))
        journal.commit()
        journal.add_job(_job("a"))
        journal.add_messages([OutboxMessage("t", b"result a" * 2000)])
        journal.after_commit(lambda: ran.append("ack a"))
        with files_cannot_grow(Path(f"{journal.path}-wal")), pytest.raises(JournalFailed) as lost:
            journal.commit()
        assert str(lost.value) == f"the journal {journal.path} could not be written: disk I/O error"
        assert failures == [lost.value]
        assert not journal.in_transaction
        journal.commit()
        await asyncio.sleep(0.1)
        assert ran == []  # "a" is not in the journal: its ack and its run never happen
        assert journal.get("a") is None
        assert journal.get("first") is not None
        assert journal.pending_messages(limit=10) == []

        # A journal whose owner did not stop writes on once the disk takes writes again.
        journal.add_job(_job("b"))
        journal.add_messages([OutboxMessage("t", b"result b")])
        journal.after_commit(lambda: ran.append("ack b"))
        for _ in range(100):
            if ran:
                break
            await asyncio.sleep(0.01)
        assert ran == ["ack b"]
        assert [m.payload for m in journal.pending_messages(limit=10)] == [b"result b"]
        journal.close()

    asyncio.run(scenario())


def test_a_failed_statement_that_sqlite_undoes_alone_is_the_callers_error(tmp_path: Path) -> None:
    """Only the failed write is undone: the group lives on, and nobody is told to stop."""
    journal = Journal(tmp_path / "j.sqlite3")
    journal.on_failure = lambda failure: pytest.fail(f"not a lost group: {failure}")
    journal.add_job(_job("a"))
    with pytest.raises(sqlite3.IntegrityError):
        journal.add_job(_job("a"))
    assert journal.get("a") is not None
    journal.close()
