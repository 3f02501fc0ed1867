"""SQS jobs in, S3 images, SNS notifications out: the real daemon against moto over HTTP."""

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import LOCK_RULE, TOPIC_RULE
from tests.support.aws_helpers import Moto, moto_server
from tests.support.mqtt_helpers import Collector, Daemon
from tests.support.ollama_standin import OllamaStandin
from tests.support.samples import jpeg

pytestmark = [pytest.mark.broker, pytest.mark.aws]


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    with moto_server() as server:
        yield server


def _aws(moto: Moto, queue_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "aws": {
            "endpoint_url": moto.url,
            "region": "us-east-1",
            "queue_url": queue_url,
            "wait_time": 1,
            "visibility_timeout": 3,
            "heartbeat": 1,
            **extra,
        }
    }


def _events(collector: Collector, kind: str) -> list[dict[str, Any]]:
    return [m.json() for m in collector.on("llm2mqtt/bridge/event") if m.json()["type"] == kind]


def _start(
    daemon: Callable[..., Daemon], collector: Collector, rules: list[dict[str, Any]], **kw: Any
) -> Daemon:
    process = daemon(rules, **kw)
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    return process


def test_sqs_text_job_is_answered_on_mqtt_and_sns_then_deleted(
    daemon, collector: Collector, moto: Moto, ollama: OllamaStandin
) -> None:
    queue, _ = moto.queue()
    topic = moto.unique("answers")
    inbox = moto.topic_to_queue(topic)
    rule = {
        **TOPIC_RULE,
        "sns": [{"topic_arn": moto.topic_arn(topic), "subject": "{{ rule }} says {{ state }}"}],
    }
    _start(daemon, collector, [rule], **_aws(moto, queue))
    message_id = moto.send(queue, {"rule": "message_topic", "text": "buy milk for shopping", "room": "hall"})

    result = collector.wait_for("llm2mqtt/message_topic/result")[0].json()
    assert result["label"] == "shopping"
    assert result["source"].startswith("sqs:jobs-")
    assert result["id"] == message_id  # the dedupe key of a message without `id`
    collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_done")
    kinds = {e["type"] for e in map(lambda m: m.json(), collector.on("llm2mqtt/bridge/event"))}
    assert {"job_queued", "job_started", "job_done"} <= kinds  # shows on MQTT like a local job

    note = moto.notifications(inbox, 1)[0]
    assert note["Subject"] == "message_topic says shopping"
    assert json.loads(note["Message"])["job_id"] == result["job_id"]
    attributes = {k: v["Value"] for k, v in note["MessageAttributes"].items()}
    assert attributes == {"rule": "message_topic", "state": "shopping", "job_id": result["job_id"]}
    moto.wait_held(queue, 0)  # deleted once MQTT and SNS had the outputs
    assert len(ollama.requests) == 1


def test_s3_image_job_and_sns_condition_only_on_unlocked(
    daemon, collector: Collector, moto: Moto, ollama: OllamaStandin
) -> None:
    queue, _ = moto.queue()
    bucket = moto.bucket()
    moto.s3.put_object(Bucket=bucket, Key="door/bright.jpg", Body=jpeg(230))
    moto.s3.put_object(Bucket=bucket, Key="door/dark.jpg", Body=jpeg(20))
    topic = moto.unique("door")
    inbox = moto.topic_to_queue(topic)
    rule = {
        **LOCK_RULE,
        "sns": [
            {
                "topic_arn": moto.topic_arn(topic),
                "when": "state == 'unlocked' and changed",
                "subject": "Door {{ state }}",
                "message": "The {{ input.door }} door is {{ state }} (was {{ previous_state }}).",
            }
        ],
    }
    _start(daemon, collector, [rule], **_aws(moto, queue, buckets=[bucket]))
    moto.send(
        queue,
        {
            "rule": "front_door_lock",
            "id": "b1",
            "image": {"s3": f"s3://{bucket}/door/bright.jpg"},
            "door": "front",
        },
    )
    collector.wait_for("llm2mqtt/front_door_lock/result")
    moto.send(
        queue,
        {
            "rule": "front_door_lock",
            "id": "d1",
            "image": {"s3": f"s3://{bucket}/door/dark.jpg"},
            "door": "front",
        },
    )
    results = [m.json() for m in collector.wait_for("llm2mqtt/front_door_lock/result", 2)]
    assert [r["state"] for r in results] == ["locked", "unlocked"]
    assert ollama.requests[0].brightness[0] > 200  # the S3 bytes really reached the model

    notes = moto.notifications(inbox, 1)
    assert notes[0]["Subject"] == "Door unlocked"
    assert notes[0]["Message"] == "The front door is unlocked (was locked)."
    moto.wait_held(queue, 0)
    time.sleep(1.0)
    assert moto.notifications(inbox, 0, timeout=1) == []  # the locked result sent nothing


BAD_INPUTS: list[tuple[str, Callable[[Moto, str], dict[str, Any] | str], str]] = [
    ("not_json", lambda moto, bucket: "this is { not json", "message body is not JSON"),
    (
        "unknown_rule",
        lambda moto, bucket: {"rule": "no_such_rule", "text": "hi"},
        "unknown rule 'no_such_rule'",
    ),
    (
        "missing_s3_key",
        lambda moto, bucket: {"rule": "front_door_lock", "image": {"s3": f"s3://{bucket}/nope.jpg"}},
        "does not exist",
    ),
    (
        "object_over_limit",
        lambda moto, bucket: {"rule": "front_door_lock", "image": {"s3": f"s3://{bucket}/big.jpg"}},
        "above the limit",
    ),
    (
        "bucket_not_allowed",
        lambda moto, bucket: {"rule": "front_door_lock", "image": {"s3": "s3://someone-elses-bucket/a.jpg"}},
        "is not in aws.buckets",
    ),
    (
        "not_an_image",
        lambda moto, bucket: {"rule": "front_door_lock", "image": {"s3": f"s3://{bucket}/notes.txt"}},
        "is not a JPEG, PNG or WebP image",
    ),
]


@pytest.mark.parametrize(("case", "body", "error"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_message_is_reported_and_left_for_the_redrive_policy(
    daemon,
    collector: Collector,
    moto: Moto,
    ollama: OllamaStandin,
    case: str,
    body: Callable[[Moto, str], dict[str, Any] | str],
    error: str,
) -> None:
    queue, _ = moto.queue(visibility=30)
    bucket = moto.bucket()
    moto.s3.put_object(Bucket=bucket, Key="big.jpg", Body=jpeg(200, size=(800, 600)))
    moto.s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"just some text")
    _start(daemon, collector, [LOCK_RULE], **_aws(moto, queue, buckets=[bucket], max_image=2000))
    message_id = moto.send(queue, body(moto, bucket))

    failed = collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_failed")[
        0
    ].json()
    assert error in failed["error"]
    assert failed["message_id"] == message_id
    assert failed["receive_count"] == 1
    if case not in ("not_json", "unknown_rule"):
        report = collector.wait_for("llm2mqtt/front_door_lock/error")[0].json()
        assert error in report["error"]
        assert report["input"]["message_id"] == message_id
    time.sleep(1.5)  # past a few heartbeats: the message is neither deleted nor extended
    assert moto.held(queue) == 1
    assert not ollama.requests


def test_sns_error_is_retried_from_the_outbox_and_delete_waits_for_it(
    daemon, collector: Collector, moto: Moto, ollama: OllamaStandin
) -> None:
    queue, _ = moto.queue()
    topic = moto.unique("later")  # does not exist yet: SNS answers NotFound
    rule = {**TOPIC_RULE, "sns": [{"topic_arn": moto.topic_arn(topic)}]}
    process = _start(daemon, collector, [rule], **_aws(moto, queue))
    moto.send(queue, {"rule": "message_topic", "id": "s1", "text": "security alarm"})
    result = collector.wait_for("llm2mqtt/message_topic/result")[0].json()
    time.sleep(4.0)  # longer than the visibility timeout: only the heartbeat keeps it hidden
    assert moto.held(queue) == 1
    assert "NotFound" in process.output()

    inbox = moto.topic_to_queue(topic)  # SNS works again
    note = moto.notifications(inbox, 1, timeout=40)[0]
    assert json.loads(note["Message"])["job_id"] == result["job_id"]
    moto.wait_held(queue, 0, timeout=10)
    assert len(collector.on("llm2mqtt/message_topic/result")) == 1
    assert len(ollama.requests) == 1


@pytest.mark.slow
def test_kill_9_during_sqs_job_redelivers_and_delivers_once(
    daemon, collector: Collector, moto: Moto, ollama: OllamaStandin
) -> None:
    queue, _ = moto.queue(visibility=2)
    topic = moto.unique("once")
    inbox = moto.topic_to_queue(topic)
    rule = {**TOPIC_RULE, "sns": [{"topic_arn": moto.topic_arn(topic)}]}
    settings = _aws(moto, queue, visibility_timeout=2, heartbeat=0.5)
    ollama.latency = 4.0
    first = _start(daemon, collector, [rule], **settings)
    moto.send(queue, {"rule": "message_topic", "id": "k1", "text": "chores: wash the car"})
    started = collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_started")
    job_id = started[0].json()["job_id"]
    deadline = time.monotonic() + 10
    while not ollama.requests and time.monotonic() < deadline:
        time.sleep(0.02)  # killed while the model is answering
    assert ollama.in_flight == 1
    first.kill()
    assert moto.held(queue) == 1  # not deleted; it becomes visible again when nobody extends it

    ollama.latency = 0.0
    daemon([rule], **settings)
    result = collector.wait_for("llm2mqtt/message_topic/result", timeout=30)[0].json()
    assert result["job_id"] == job_id  # the same job, resumed, not a second one
    notes = moto.notifications(inbox, 1)
    moto.wait_held(queue, 0, timeout=20)
    time.sleep(2.0)
    assert len(collector.on("llm2mqtt/message_topic/result")) == 1
    assert [json.loads(n["Message"])["job_id"] for n in notes] == [job_id]
    assert moto.notifications(inbox, 0, timeout=1) == []
    assert len(ollama.requests) == 2  # the interrupted call and the redo


@pytest.mark.slow
def test_poison_message_ends_in_the_dead_letter_queue(
    daemon, collector: Collector, moto: Moto, ollama: OllamaStandin
) -> None:
    queue, dlq = moto.queue(visibility=1, max_receive=2)
    assert dlq is not None
    _start(daemon, collector, [TOPIC_RULE], **_aws(moto, queue, visibility_timeout=1, heartbeat=0.5))
    message_id = moto.send(queue, "poison: not a job at all")
    dead = moto.read(dlq, 1, timeout=20)
    assert dead[0]["MessageId"] == message_id
    reports = _events(collector, "job_failed")
    assert [r["receive_count"] for r in reports] == [1, 2]  # reported on every receive
    assert moto.held(queue) == 0
    assert not ollama.requests


def test_same_id_twice_runs_once_and_both_messages_go(
    daemon, collector: Collector, moto: Moto, ollama: OllamaStandin
) -> None:
    queue, _ = moto.queue()
    _start(daemon, collector, [TOPIC_RULE], **_aws(moto, queue))
    moto.send(queue, {"rule": "message_topic", "id": "twice", "text": "buy eggs for shopping"})
    collector.wait_for("llm2mqtt/message_topic/result")
    moto.send(queue, {"rule": "message_topic", "id": "twice", "text": "buy eggs for shopping"})
    moto.wait_held(queue, 0)
    time.sleep(0.5)
    assert len(collector.on("llm2mqtt/message_topic/result")) == 1
    assert len(ollama.requests) == 1


def test_replies_go_to_the_mqtt_topic_and_the_sns_topic_named_in_the_message(
    daemon, collector: Collector, moto: Moto, ollama: OllamaStandin
) -> None:
    queue, _ = moto.queue()
    topic = moto.unique("reply")
    inbox = moto.topic_to_queue(topic)
    _start(daemon, collector, [TOPIC_RULE], **_aws(moto, queue))
    moto.send(queue, {"rule": "message_topic", "id": "r1", "text": "shopping", "reply": "replies/phone"})
    moto.send(queue, {"rule": "message_topic", "id": "r2", "text": "chores", "reply": moto.topic_arn(topic)})
    reply = collector.wait_for("replies/phone")[0].json()
    assert reply["id"] == "r1"
    note = moto.notifications(inbox, 1)[0]
    assert json.loads(note["Message"])["id"] == "r2"
    moto.wait_held(queue, 0)


def test_base64_image_in_the_message(daemon, collector: Collector, moto: Moto, ollama: OllamaStandin) -> None:
    queue, _ = moto.queue()
    _start(daemon, collector, [LOCK_RULE], **_aws(moto, queue))
    moto.send(queue, {"rule": "front_door_lock", "image": base64.b64encode(jpeg(20)).decode()})
    assert collector.wait_for("llm2mqtt/front_door_lock/result")[0].json()["state"] == "unlocked"
    moto.wait_held(queue, 0)


def test_fifo_queue_keeps_order_per_group(
    daemon, collector: Collector, moto: Moto, ollama: OllamaStandin
) -> None:
    queue, _ = moto.queue(fifo=True)
    ollama.latency = 0.2
    _start(daemon, collector, [TOPIC_RULE], **_aws(moto, queue), ollama={"parallel": 3})
    for i in range(6):
        group = "a" if i % 2 == 0 else "b"
        moto.send(
            queue, {"rule": "message_topic", "id": f"{group}{i}", "text": f"job {i}"}, MessageGroupId=group
        )
    results = [m.json()["id"] for m in collector.wait_for("llm2mqtt/message_topic/result", 6, timeout=30)]
    assert [r for r in results if r.startswith("a")] == ["a0", "a2", "a4"]
    assert [r for r in results if r.startswith("b")] == ["b1", "b3", "b5"]
    assert ollama.peak_concurrency <= 2  # never two of one group at once
    moto.wait_held(queue, 0)


def test_local_jobs_of_a_rule_are_mirrored_to_an_sqs_queue(
    daemon, collector: Collector, moto: Moto, ollama: OllamaStandin
) -> None:
    outbound, _ = moto.queue("mirror", visibility=30)
    rule = {**TOPIC_RULE, "mirror_to_sqs": outbound}
    _start(daemon, collector, [rule], aws={"endpoint_url": moto.url, "region": "us-east-1"})
    collector.publish("home/messages/in", "the kitchen needs cleaning, chores")
    result = collector.wait_for("llm2mqtt/message_topic/result")[0].json()
    copied = json.loads(moto.read(outbound, 1)[0]["Body"])
    assert copied["job_id"] == result["job_id"]
    assert copied["label"] == result["label"]
