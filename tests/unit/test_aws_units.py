"""AWS pieces without a network: the job message, SNS conditions, the outbox's sinks, the schema doc."""

import json
import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bridge.aws.message import job_message_schema, parse_job_message
from bridge.aws.sns import clean_subject, render_target, wanted
from bridge.config.aws import AwsSettings, SnsTarget
from bridge.errors import InputError
from bridge.pipeline.journal import Job, Journal, OutboxMessage
from bridge.pipeline.outbox import Outbox
from tests.support.mqtt_helpers import ROOT

ARN = "arn:aws:sns:us-east-1:123456789012:door"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("{not json", "message body is not JSON"),
        ("[1, 2]", "is not of type 'object'"),
        ('{"text": "no rule"}', "'rule' is a required property"),
        ('{"rule": "Bad Name"}', "rule: 'Bad Name' does not match"),
        ('{"rule": "r", "image": {"s3": "https://x/y"}}', "image"),
        ('{"rule": "r", "reply": "arn:aws:sqs:us-east-1:1:q"}', "is not an SNS topic ARN"),
        ('{"rule": "r", "reply": "replies/#"}', "is not an MQTT topic to publish on"),
        ('{"rule": "r", "id": true}', "id"),
    ],
)
def test_bad_job_messages_are_refused_with_a_reason(body: str, error: str) -> None:
    with pytest.raises(InputError, match=re.escape(error)):
        parse_job_message(body)


def test_job_message_image_forms_and_replies() -> None:
    s3 = parse_job_message(
        '{"rule": "r", "id": 7, "image": {"s3": "s3://my-bucket/a/b.jpg"}, "where": "hall"}'
    )
    assert (s3.s3, s3.id, s3.data) == (("my-bucket", "a/b.jpg"), "7", {"id": 7, "where": "hall"})
    url = parse_job_message('{"rule": "r", "image": "https://cam/x.jpg", "reply": "phones/me"}')
    assert url.data == {"image_url": "https://cam/x.jpg"}
    assert url.reply == {"topic": "phones/me"}
    b64 = parse_job_message(json.dumps({"rule": "r", "image": "/9j/4AAQ", "reply": ARN}))
    assert b64.data == {"image": "/9j/4AAQ"}
    assert b64.reply == {"sns": ARN}


def test_committed_schema_is_the_one_the_bridge_uses() -> None:
    committed = json.loads((ROOT / "docs" / "sqs-job.schema.json").read_text())
    assert committed == job_message_schema()


def _vars(**overrides: Any) -> dict[str, Any]:
    base = {
        "rule": "door",
        "job_id": "j1",
        "source": "sqs:q",
        "state": "unlocked",
        "previous_state": "locked",
        "changed": True,
        "result": {"state": "unlocked"},
        "input": {"door": "front"},
    }
    return {**base, **overrides}


@pytest.mark.parametrize(
    ("when", "variables", "expected"),
    [
        (None, _vars(), True),
        ("state == 'unlocked'", _vars(), True),
        ("state == 'unlocked'", _vars(state="locked"), False),
        ("state == 'unlocked' and changed", _vars(changed=False), False),
        ("result.state == 'unlocked' and input.door == 'front'", _vars(), True),
        # The sandbox refuses attribute tricks; a refused or broken condition is simply false.
        ("result.__class__.__mro__", _vars(), False),
        ("().__class__.__bases__[0].__subclasses__()", _vars(), False),
        ("missing.deeper == 1", _vars(), False),
    ],
)
def test_sns_condition(when: str | None, variables: dict[str, Any], expected: bool) -> None:
    assert wanted(SnsTarget(topic_arn=ARN, when=when), variables) is expected


def test_sns_target_validates_its_templates() -> None:
    with pytest.raises(ValueError, match="condition error"):
        SnsTarget(topic_arn=ARN, when="state ==")
    with pytest.raises(ValueError, match="template error"):
        SnsTarget(topic_arn=ARN, subject="{{ rule")
    with pytest.raises(ValueError, match="topic_arn"):
        SnsTarget(topic_arn="arn:aws:sqs:us-east-1:123456789012:q")


def test_sns_row_subject_attributes_and_fallback() -> None:
    target = SnsTarget(topic_arn=ARN, subject="Tür {{ state }}\nnow", message="{{ result.nope.deeper }}")
    row = render_target(target, _vars(state=None), {"state": None})
    body = json.loads(row.payload)
    assert (row.sink, row.topic) == ("sns", ARN)
    assert body["attributes"] == {"rule": "door", "job_id": "j1"}  # an empty state is left out
    assert body["message"] == '{"state": null}'  # the template failed: the result JSON instead
    assert clean_subject("Tür ist\noffen " + "x" * 200) == ("T?r ist offen " + "x" * 200)[:99]


def test_aws_settings_check_heartbeat_and_queue_urls() -> None:
    with pytest.raises(ValueError, match="heartbeat must be shorter"):
        AwsSettings(visibility_timeout=10, heartbeat=10)
    with pytest.raises(ValueError, match="not an SQS queue URL"):
        AwsSettings(queue_urls=["https://example.com/nope"])
    settings = AwsSettings(queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo")
    assert settings.queues == ["https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo"]


class _Link:
    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    def publish(self, topic: str, payload: bytes, **_: Any) -> int:
        self.sent.append((len(self.sent) + 1, topic))
        return len(self.sent)


class _Sink:
    def __init__(self) -> None:
        self.rows: list[tuple[OutboxMessage, Callable[[int], None]]] = []

    def send(self, row: OutboxMessage, done: Callable[[int], None]) -> None:
        self.rows.append((row, done))


def _job(job_id: str) -> Job:
    return Job(
        id=job_id, rule="r", source="sqs:q", state="running", priority=0, created=0.0, attempts=1, input={}
    )


def test_outbox_sends_sns_rows_to_their_sink_and_calls_back_when_a_job_is_delivered(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    link, sink = _Link(), _Sink()
    outbox = Outbox(journal, link)
    outbox.add_sink("sns", sink)
    journal.add_job(_job("a"))
    journal.finish(
        "a",
        "done",
        messages=[OutboxMessage("llm2mqtt/r/result", b"{}"), OutboxMessage(ARN, b"{}", sink="sns")],
    )
    outbox.notify()
    outbox.pump()  # without a loop, the pump runs when asked
    delivered: list[str] = []
    outbox.when_delivered("a", lambda: delivered.append("a"))
    assert [topic for _, topic in link.sent] == ["llm2mqtt/r/result"]  # the ARN never goes to MQTT
    assert [row.topic for row, _ in sink.rows] == [ARN]
    outbox.on_published(1)
    assert delivered == []  # SNS has not accepted yet
    row, done = sink.rows[0]
    done(row.id)
    assert delivered == ["a"]
    assert journal.outbox_size() == 0
    outbox.when_delivered("a", lambda: delivered.append("again"))
    assert delivered == ["a", "again"]  # nothing pending: at once
    journal.close()


def test_a_backlog_for_one_sink_is_not_read_again_by_the_other_after_each_commit(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    link, sink = _Link(), _Sink()
    outbox = Outbox(journal, link)
    outbox.add_sink("sns", sink)  # SNS is away: it never accepts
    journal.add_messages([OutboxMessage(ARN, b"{}", sink="sns") for _ in range(50)])
    outbox.notify()
    outbox.pump()
    assert len(sink.rows) == 50
    backlog_end = journal.durable_row
    reads: list[tuple[int, bool | None]] = []
    pending = journal.pending_messages

    def counted(after: int = 0, limit: int = 500, *, mqtt: bool | None = None) -> list[OutboxMessage]:
        reads.append((after, mqtt))
        return pending(after, limit, mqtt=mqtt)

    journal.pending_messages = counted  # type: ignore[method-assign]
    for n in range(5):  # results go on meanwhile, one commit each
        journal.add_messages([OutboxMessage(f"llm2mqtt/r/result{n}", b"{}")])
        outbox.notify()
        outbox.pump()
    assert [topic for _, topic in link.sent] == [f"llm2mqtt/r/result{n}" for n in range(5)]
    mqtt_reads = [after for after, mqtt in reads if mqtt]
    assert mqtt_reads  # read once per commit, each past the SNS rows, not from before them
    assert min(mqtt_reads) >= backlog_end
    assert all(after >= backlog_end for after, mqtt in reads if mqtt is False)
    assert len(sink.rows) == 50  # nothing sent twice
    journal.close()


def test_sns_row_not_accepted_before_a_crash_is_sent_again(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    outbox = Outbox(journal, _Link())
    outbox.add_sink("sns", _Sink())
    journal.add_messages([OutboxMessage(ARN, b"{}", sink="sns")])
    outbox.notify()
    outbox.pump()
    journal.close()
    again = Journal(tmp_path / "j.sqlite3")
    sink = _Sink()
    Outbox(again, _Link()).add_sink("sns", sink)
    again.commit()
    assert [row.topic for row, _ in sink.rows] == [ARN]
    again.close()


def test_journal_adds_the_outbox_columns_to_an_old_database(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
            " payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, props TEXT,"
            " created REAL NOT NULL)"
        )
        db.execute("INSERT INTO outbox (topic, payload, qos, retain, created) VALUES ('t', x'00', 1, 0, 0)")
        db.execute("ALTER TABLE outbox ADD COLUMN sink TEXT NOT NULL DEFAULT 'mqtt'")
        db.execute("CREATE INDEX outbox_sink ON outbox (sink, id)")  # what journals had before
        db.commit()
    journal = Journal(path)
    assert [(m.topic, m.sink, m.job_id) for m in journal.pending_messages()] == [("t", "mqtt", None)]
    journal.close()
    with closing(sqlite3.connect(path)) as db:
        indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "outbox_sink" not in indexes  # a page written in most commits, for nothing
    assert "outbox_job" in indexes


def test_a_hostile_job_message_is_an_input_error() -> None:
    from bridge.aws.message import parse_job_message
    from bridge.errors import InputError

    for body in ('{"rule":"r","a":' * 10_000 + "1" + "}" * 10_000, '{"rule":"r","n":' + "9" * 5000 + "}"):
        with pytest.raises(InputError, match="nested too deeply or with a number too large"):
            parse_job_message(body)
