"""What one job costs the journal: its SQL statements counted on a real SQLite journal.

Jobs go through the real intake, runner and outbox (an Ollama stand-in answers, a publisher
of the test's own acknowledges at once), as in the daemon: group commits on a running loop.
"""

import asyncio
import functools
import json
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.traced import statement_kind, statement_text
from bridge.config.loader import load_config
from bridge.pipeline.backend_pool import build_pool
from bridge.pipeline.intake import Intake, Submission
from bridge.pipeline.journal import Job, Journal, OutboxMessage
from bridge.pipeline.outbox import DELETE_EVERY, Outbox
from bridge.pipeline.queue import JobQueue
from bridge.pipeline.runner import Runner
from bridge.pipeline.topics import Topics
from bridge.pipeline.wal_sync import ACKS_SOON
from tests.support.ollama_standin import OllamaStandin

JOBS = 40
RULE = {
    "name": "note",
    "handler": "classify",
    "model": "qwen2.5:3b",
    "prompt": "Which area?",
    "labels": ["shopping", "chores", "other"],
    "inputs": [{"mqtt": "notes/in"}],
}


class _Broker:
    """A Publisher whose broker acknowledges each QoS 1 message at the next loop iteration."""

    connected = True

    def __init__(self) -> None:
        self.on_published: Callable[[int], None] = lambda mid: None
        self.topics: Counter[str] = Counter()
        self._mid = 0

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, props: object = None
    ) -> int | None:
        self._mid += 1
        self.topics[topic.rsplit("/", 1)[-1]] += 1
        asyncio.get_running_loop().call_soon(self.on_published, self._mid)
        return self._mid


@pytest.fixture
def standin() -> Iterator[OllamaStandin]:
    with OllamaStandin() as server:
        yield server


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _grouped(folder: Path, **grouping: float) -> tuple[Journal, list[str]]:
    """A journal grouping its commits on the running loop, and the statements it executes."""
    journal = Journal(folder / "journal.sqlite3")
    journal.group_commits(asyncio.get_running_loop(), **grouping)
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    return journal, statements


async def _run_jobs(
    tmp_path: Path, standin: OllamaStandin, jobs: int, mqtt: dict[str, Any] | None = None
) -> tuple[list[str], _Broker]:
    """Submit `jobs` text jobs one after the other, each run to its delivered result; the SQL
    statements the journal executed meanwhile, and what was published."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "note.yaml").write_text(yaml.safe_dump(RULE))
    config_yaml = {"ollama": {"url": standin.url}, "mqtt": mqtt or {}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config_yaml))
    config = load_config(tmp_path / "config.yaml", environ={})
    settings, rules = config.settings, {rule.name: rule for rule in config.rules}
    loop = asyncio.get_running_loop()
    journal = Journal(tmp_path / "journal.sqlite3")  # synchronous: full, the default
    journal.group_commits(loop)
    broker, queue, topics = _Broker(), JobQueue(), Topics()
    outbox = Outbox(journal, broker, loop=loop, unpublished=settings.mqtt.quiet_events)
    broker.on_published = outbox.on_published
    intake = Intake(journal, queue, outbox, rules, topics, settings)
    runner = Runner(journal, build_pool(settings), outbox, queue, rules, topics, settings)
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    fsyncs = journal._sync.fsyncs
    for i in range(jobs):
        payload = json.dumps({"id": f"n{i}", "text": f"buy milk {i}"}).encode()
        ack = functools.partial(broker.topics.update, ["input acknowledged"])
        intake.submit(Submission(rule="note", source="mqtt:notes/in", payload=payload), on_durable=ack)
        await runner.run(await queue.get())
        await _until(lambda done=i + 1: broker.topics["result"] == done)
        await _until(lambda done=i + 1: broker.topics["input acknowledged"] == done)
    broker.topics["fsyncs"] = journal._sync.fsyncs - fsyncs
    await asyncio.sleep(DELETE_EVERY * 3)  # the last deletes
    journal.commit()
    await _until(lambda: journal.outbox_size() == 0)
    journal._db.set_trace_callback(None)
    await runner.close()
    journal.close()
    return statements, broker


def test_a_job_costs_few_statements_and_writes(tmp_path: Path, standin: OllamaStandin) -> None:
    statements, broker = asyncio.run(_run_jobs(tmp_path, standin, JOBS))
    assert broker.topics["result"] == JOBS  # every result, state and event still published
    assert broker.topics["state"] == JOBS
    assert broker.topics["event"] == 3 * JOBS
    kinds = Counter(statement_kind(s) for s in statements)
    texts = Counter(statement_text(s) for s in statements)
    per_job = len(statements) / JOBS
    writes = sum(n for kind, n in kinds.items() if kind.split()[0] in ("INSERT", "UPDATE", "DELETE"))
    report = "\n".join(f"{n / JOBS:5.2f} {text[:120]}" for text, n in texts.most_common())
    # Jobs here come one at a time, each in one commit: 10.3 statements and 4.1 writes per job;
    # before, 19.1 and 6.0 (three PRAGMAs for the journal's size, max(id) at a commit, the job
    # read before it starts, an INSERT per outbox row, a DELETE per ack), then 13.4 (the outbox
    # was read after every commit, also one that added no row), then 12.4 (two commits a job:
    # the input's and the result's).
    assert per_job <= 11, report
    reads = sum(1 for s in statements if s.startswith("SELECT id, topic"))
    assert reads <= 1.1 * JOBS, report  # the outbox is read after a commit that added rows
    assert writes / JOBS <= 4.5, report
    assert kinds["PRAGMA"] <= 1, report  # page_size once; the size read at most once a second
    assert not any("max(id)" in s for s in statements), report
    assert not any(s.startswith("SELECT id, rule, source") for s in statements), report  # Journal.get
    assert kinds["INSERT outbox"] == JOBS, report  # result and state rows in one statement
    assert kinds["DELETE outbox"] < JOBS / 2, report  # delivered rows deleted together


def test_a_job_takes_one_commit_and_one_fsync_for_its_input_and_its_result(
    tmp_path: Path, standin: OllamaStandin
) -> None:
    """The input's row and acknowledgement wait for the result's commit and fsync instead of
    having their own (it would be two of each per job: the source holds the input until it is
    acknowledged, nobody hurries); the job runs meanwhile."""
    statements, broker = asyncio.run(_run_jobs(tmp_path, standin, JOBS))
    assert broker.topics["input acknowledged"] == JOBS
    assert broker.topics["fsyncs"] <= JOBS + 2, broker.topics  # the last deletes may take one
    assert statements.count("COMMIT") <= JOBS + 2, statements.count("COMMIT")


def test_inputs_with_an_id_are_not_hashed_and_cost_no_payload_index_entry(
    tmp_path: Path, standin: OllamaStandin
) -> None:
    asyncio.run(_run_jobs(tmp_path, standin, 3))  # every input carries an `id`
    path = tmp_path / "journal.sqlite3"
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM jobs WHERE payload_hash IS NOT NULL").fetchone() == (0,)
    # A journal from before held every job's hash in another index: it goes at the next start.
    db.execute("CREATE INDEX jobs_payload ON jobs (rule, payload_hash, created)")
    db.close()
    journal = Journal(path)
    names = {row[0] for row in journal._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "jobs_payload" not in names
    # The partial index still serves the lookup of an input without an `id` by its bytes.
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    assert journal.find_duplicate("note", dedupe_key=None, payload_hash="ab", window=60) is None
    journal._db.set_trace_callback(None)
    plan = " ".join(row[-1] for row in journal._db.execute(f"EXPLAIN QUERY PLAN {statements[-1]}"))
    assert "USING INDEX jobs_payload_hash" in plan, plan
    journal.close()


def test_job_events_choose_the_lifecycle_events_published(tmp_path: Path, standin: OllamaStandin) -> None:
    _, broker = asyncio.run(_run_jobs(tmp_path, standin, 5, mqtt={"job_events": ["job_done"]}))
    assert (broker.topics["result"], broker.topics["state"], broker.topics["event"]) == (5, 5, 5)


def test_delivered_rows_are_deleted_together_and_undelivered_ones_survive(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        journal = Journal(path)
        journal.group_commits(loop)
        broker = _Broker()
        outbox = Outbox(journal, broker, loop=loop)
        acks: list[int] = []
        broker.on_published = acks.append  # held: ten commits take as long as ten fsyncs
        statements: list[str] = []
        journal._db.set_trace_callback(statements.append)
        for i in range(10):  # ten commits
            outbox.add([OutboxMessage(f"t/{i}", b"delivered")])
            await _until(lambda topic=str(i): broker.topics[topic] == 1)
        for mid in acks:  # then the broker's acks, each in its own loop iteration
            outbox.on_published(mid)
            await asyncio.sleep(0)
        await _until(lambda: journal.outbox_size() == 0, timeout=DELETE_EVERY * 5)
        deletes = [s for s in statements if s.startswith("DELETE")]
        # A row that never got its PUBACK: kept, and sent again after a restart.
        broker.on_published = lambda mid: None
        outbox.add([OutboxMessage("t/kept", b"undelivered")])
        await _until(lambda: broker.topics["kept"] == 1)
        journal._sync.close()  # no close(): as after a kill -9, nothing more reaches the file
        journal._db.close()
        return deletes

    deletes = asyncio.run(scenario())
    assert len(deletes) == 1, deletes  # ten rows, not ten statements
    assert "IN (1,2,3," in deletes[0], deletes
    reopened = Journal(path)
    assert [(m.topic, m.payload) for m in reopened.pending_messages()] == [("t/kept", b"undelivered")]
    reopened.close()


def test_writes_made_while_an_fsync_is_under_way_are_committed_together_once_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next fsync could not start earlier, so their commit waits for it: one COMMIT (and
    one set of pages) for all of them, and nothing that waits for them runs any later."""
    disk = threading.Event()  # the fsync under way returns when set
    real_fsync = os.fsync
    monkeypatch.setattr("bridge.pipeline.wal_sync.os.fsync", lambda fd: (disk.wait(10), real_fsync(fd)))

    async def scenario() -> tuple[list[str], int, int]:
        journal, statements = _grouped(tmp_path)
        durable: list[str] = []
        journal.add_messages([OutboxMessage("t/a", b"a")])
        journal.after_commit(lambda: durable.append("a"))  # someone waits: committed at once
        await _until(lambda: journal._sync.in_flight)
        for name in ("b", "c", "d"):  # each in a loop iteration of its own, all while a syncs
            journal.add_messages([OutboxMessage(f"t/{name}", name.encode())])
            journal.after_commit(functools.partial(durable.append, name))
            await asyncio.sleep(0.01)
        while_syncing = statements.count("COMMIT")
        disk.set()
        await _until(lambda: len(durable) == 4)
        assert [m.topic for m in journal.pending_messages()] == ["t/a", "t/b", "t/c", "t/d"]
        journal._db.set_trace_callback(None)
        journal.close()
        return durable, while_syncing, statements.count("COMMIT")

    durable, while_syncing, commits = asyncio.run(scenario())
    assert durable == ["a", "b", "c", "d"]
    assert (while_syncing, commits) == (1, 2)  # a's, then b, c and d's together


def test_writes_within_the_gap_after_a_commit_are_committed_together_once_it_has_passed(
    tmp_path: Path,
) -> None:
    """In a burst the jobs finished within `gap` of a commit share the next one (one COMMIT, one
    fsync); a write after a quiet spell longer than the gap is committed at once."""
    gap = 0.3

    async def scenario() -> tuple[list[str], list[int], float, float]:
        loop = asyncio.get_running_loop()
        journal, statements = _grouped(tmp_path, gap=gap)
        durable: list[str] = []
        at: dict[str, float] = {}

        def done(name: str) -> None:
            durable.append(name)
            at[name] = loop.time()

        def write(name: str) -> None:
            journal.add_messages([OutboxMessage(f"t/{name}", name.encode())])
            journal.after_commit(functools.partial(done, name))

        started = loop.time()
        write("a")  # the first: committed at the end of this iteration
        await _until(lambda: "a" in durable)
        write("b")
        await asyncio.sleep(0.01)
        write("c")  # in an iteration of its own
        await asyncio.sleep(0.05)
        commits = [statements.count("COMMIT")]  # b and c wait for the gap
        await _until(lambda: len(durable) == 3)
        commits.append(statements.count("COMMIT"))
        await asyncio.sleep(gap)  # quiet for longer than the gap
        quiet = loop.time()
        write("d")
        await _until(lambda: "d" in durable)
        commits.append(statements.count("COMMIT"))
        assert [m.topic for m in journal.pending_messages()] == ["t/a", "t/b", "t/c", "t/d"]
        journal._db.set_trace_callback(None)
        journal.close()
        return durable, commits, at["b"] - started, at["d"] - quiet

    durable, commits, b_after, d_after = asyncio.run(scenario())
    assert durable == ["a", "b", "c", "d"]
    assert commits == [1, 2, 3]  # a's; b and c's together; d's
    assert b_after >= gap  # not before the gap after a's commit
    assert d_after < gap  # d did not wait for one


def test_acknowledgements_piling_up_within_the_gap_are_committed_without_waiting_for_it(
    tmp_path: Path,
) -> None:
    """A broker sends only so many inputs unacknowledged: once `ACKS_SOON` acknowledgements
    wait, they are committed at the end of the loop's turn, gap or not."""
    gap = 5.0

    async def scenario() -> tuple[int, int, float]:
        loop = asyncio.get_running_loop()
        journal, statements = _grouped(tmp_path, gap=gap)
        acked: list[int] = []
        journal.add_messages([OutboxMessage("t/first", b"x")])
        journal.after_commit(lambda: acked.append(-1))  # a result: committed at once
        await _until(lambda: acked == [-1])
        started = loop.time()
        for n in range(ACKS_SOON - 1):  # too few to hurry: they wait for the gap
            journal.add_messages([OutboxMessage(f"t/{n}", b"x")])
            journal.after_commit(functools.partial(acked.append, n), ack=True)
            await asyncio.sleep(0.01)
        waiting = statements.count("COMMIT")
        journal.add_messages([OutboxMessage("t/last", b"x")])
        journal.after_commit(functools.partial(acked.append, ACKS_SOON - 1), ack=True)
        await _until(lambda: len(acked) == ACKS_SOON + 1)
        took = loop.time() - started
        commits = statements.count("COMMIT")
        journal._db.set_trace_callback(None)
        journal.close()
        return waiting, commits, took

    waiting, commits, took = asyncio.run(scenario())
    assert (waiting, commits) == (1, 2)
    assert took < gap / 2  # the gap (5 s after the first commit) was not waited out


def test_the_size_is_read_once_a_second_and_counts_what_was_written_since(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    first = journal.size(max_age=60)
    journal.put_blob(b"x" * 100_000)
    grown = journal.size(max_age=60)
    assert grown >= first + 100_000  # the image written since is counted
    # Once each (a table-valued pragma also traces its own statement, with a leading `--`).
    reads = [s for s in statements if not s.startswith("--")]
    assert len([s for s in reads if "page_count" in s or "page_size" in s]) == 2
    assert journal.size() >= 100_000  # a fresh reading, as a refusal uses
    journal.close()


def test_a_job_with_an_image_url_is_fetched_before_it_starts(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    base: dict[str, Any] = {"rule": "r", "source": "t", "priority": 0, "created": 1.0, "attempts": 0}
    journal.add_job(Job(id="url", state="queued", input={"image_url": "http://cam/1.jpg"}, **base))
    journal.add_job(Job(id="text", state="queued", input={"text": "x"}, **base))
    assert journal.start_unless_fetching("url") is None
    assert journal.get("url").state == "queued"  # type: ignore[union-attr]
    started = journal.start_unless_fetching("text")
    assert started is not None
    assert (started.state, started.attempts) == ("running", 1)
    assert journal.start_unless_fetching("missing") is None
    journal.close()
