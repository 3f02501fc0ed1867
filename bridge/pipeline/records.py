"""What the journal stores: its schema, jobs and outbox rows, and their conversion from rows."""

import json
from dataclasses import dataclass
from typing import Any, Literal

from bridge.pipeline.jsontext import dumps

JobState = Literal["queued", "running", "done", "failed", "dead", "skipped", "superseded"]
FINAL_STATES = ("done", "failed", "dead", "skipped", "superseded")

SCHEMA = """
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
-- Only inputs without an `id` are told apart by their bytes (Journal.find_duplicate); the
-- others carry no hash, and cost no entry here (one page less to write per job).
CREATE INDEX IF NOT EXISTS jobs_payload_hash ON jobs (rule, payload_hash, created)
    WHERE payload_hash IS NOT NULL;
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
OUTBOX_COLUMNS = {
    "sink": "ALTER TABLE outbox ADD COLUMN sink TEXT NOT NULL DEFAULT 'mqtt'",
    "job_id": "ALTER TABLE outbox ADD COLUMN job_id TEXT",
}
OUTBOX_INDEXES = (
    # The outbox is read by id ranges past each cursor (Outbox.pump), which the table's own
    # key serves; an index by sink cost a page written in most commits. Dropped where it was.
    "DROP INDEX IF EXISTS outbox_sink",
    "CREATE INDEX IF NOT EXISTS outbox_job ON outbox (job_id) WHERE job_id IS NOT NULL",
)
# `detail`: what the web console's job page shows and results do not carry (the prompt and
# schema sent, the model's raw answers, each attempt's error), written by the finishing write.
JOB_COLUMNS_ADDED = {"detail": "ALTER TABLE jobs ADD COLUMN detail TEXT"}
# A rule's history, newest first, page by page (job ids sort by time): the web console.
JOB_INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_rule_id ON jobs (rule, id)",
    "DROP INDEX IF EXISTS jobs_payload",  # every job's hash, before jobs_payload_hash
)
# A failed job's image, unless a job that may still be looked at uses it too.
DROP_FAILED_BLOB = (
    "DELETE FROM blobs WHERE hash = (SELECT image FROM jobs WHERE id = ?) AND NOT EXISTS"
    " (SELECT 1 FROM jobs WHERE jobs.image = blobs.hash AND jobs.id != ?"
    " AND jobs.state NOT IN ('failed', 'dead'))"
)


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
    "sqs" (a queue URL). `job_id` is set for the messages that finish a job; `kind` for a
    lifecycle event (`job_done`, ...), which `mqtt.job_events` may keep off the broker.
    """

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    props: dict[str, Any] | None = None
    id: int = 0
    sink: str = "mqtt"
    job_id: str | None = None
    kind: str | None = None

    @property
    def durable(self) -> bool:
        """Kept in the outbox table until delivered; QoS 0 MQTT telemetry is only held in memory."""
        return self.qos > 0 or self.retain or self.sink != "mqtt"


@dataclass(frozen=True)
class OpenJob:
    """The little the scheduler keeps in memory for a waiting job."""

    id: str
    rule: str
    priority: int
    created: float
    not_before: float


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


def dumps_or_none(value: Any) -> str | None:
    return None if value is None else dumps(value).decode()


def job_row(job: Job, data: str, payload_hash: str | None) -> tuple[Any, ...]:
    """The values of a job's row (`data`: its input encoded), in the order of the journal's INSERT."""
    return (
        *(job.id, job.rule, job.source, job.state, job.priority, job.created, job.started, job.finished),
        *(job.not_before, job.attempts, job.dedupe_key, payload_hash, job.image, data),
        *(dumps_or_none(job.result), job.error),
    )


def outbox_row(m: OutboxMessage, now: float, job_id: str | None) -> tuple[Any, ...]:
    """The values of an outbox row, in the order of the journal's INSERT."""
    return (m.topic, m.payload, m.qos, int(m.retain), dumps_or_none(m.props), now, m.sink, m.job_id or job_id)


def message_from_row(row: tuple[Any, ...]) -> OutboxMessage:
    """An outbox row as read by `SELECT id, topic, payload, qos, retain, props, sink, job_id`."""
    return OutboxMessage(
        id=row[0],
        topic=row[1],
        payload=bytes(row[2]),
        qos=row[3],
        retain=bool(row[4]),
        props=json.loads(row[5]) if row[5] else None,
        sink=row[6],
        job_id=row[7],
    )


def with_job(message: OutboxMessage, job_id: str) -> OutboxMessage:
    """The message, marked as one that finishes `job_id`."""
    return OutboxMessage(**{**message.__dict__, "job_id": job_id})


INSERT_JOB = (
    "INSERT INTO jobs (id, rule, source, state, priority, created, started, finished, not_before,"
    " attempts, dedupe_key, payload_hash, image, input, result, error)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A finished job's detail (the calls made, each attempt's error) is merged into what it had.
FINISH_JOB = (
    "UPDATE jobs SET state = ?, finished = ?, result = ?, error = ?,"
    " detail = CASE WHEN ?5 IS NULL THEN detail ELSE json_patch(coalesce(detail, '{}'), ?5) END"
    " WHERE id = ?6"
)
INSERT_OUTBOX = "INSERT INTO outbox (topic, payload, qos, retain, props, created, sink, job_id) VALUES"
OUTBOX_ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"
OUTBOX_FIELDS = 8
INSERT_CHUNK = 100  # rows per INSERT: 800 bound parameters, below even old SQLite's 999
# A job that may wait for its image_url to be fetched before it runs (prefetch.py).
MAY_FETCH = " AND NOT (state = 'queued' AND image IS NULL AND json_extract(input, '$.image_url') IS NOT NULL)"
