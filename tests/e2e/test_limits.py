"""What a rule accepts, limits that refuse rather than grow, and repeated interactive requests."""

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import LOCK_RULE, TOPIC_RULE
from tests.e2e.test_cli import cli
from tests.support.mqtt_helpers import Collector
from tests.support.ollama_standin import OllamaStandin
from tests.support.samples import jpeg

pytestmark = pytest.mark.broker

CAMERA = "cameras/front_door/snapshot"


def _blobs(config: Path) -> int:
    with closing(sqlite3.connect(config.parent / "data" / "journal.sqlite3")) as db:
        return int(db.execute("SELECT count(*) FROM blobs").fetchone()[0])


def _noise_jpeg(side: int = 160) -> bytes:
    """A JPEG that does not compress (random pixels), about 32 KB at the default side."""
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _props(topic: str, correlation: bytes) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = topic
    props.CorrelationData = correlation
    return props


@pytest.mark.parametrize("payload", [b"not a jpeg", b"42", b"[1,2]", b'{"text": "is it locked?"}'])
def test_an_image_rule_refuses_anything_but_an_image(
    daemon, collector: Collector, ollama: OllamaStandin, payload: bytes
) -> None:
    daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish(CAMERA, payload)
    error = collector.wait_for("llm2mqtt/front_door_lock/error")[0].json()
    assert "accepts only images" in error["error"]
    collector.publish(CAMERA, jpeg(220))  # a picture still gets its answer
    assert collector.wait_for("llm2mqtt/front_door_lock/state")[0].payload == b"locked"
    assert len(collector.on("llm2mqtt/front_door_lock/result")) == 1
    assert len(ollama.requests) == 1


def test_a_text_rule_refuses_an_image_and_try_refuses_the_same_way(
    daemon, collector: Collector, write_config, tmp_path: Path
) -> None:
    daemon([LOCK_RULE, {**TOPIC_RULE, "accepts": "text"}])
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish("llm2mqtt/message_topic/run", jpeg(100))
    assert "accepts only text" in collector.wait_for("llm2mqtt/message_topic/error")[0].json()["error"]

    path = write_config(mqtt={"url": "mqtt://127.0.0.1:9"}, ollama={"url": "http://127.0.0.1:9"})
    done = cli("try", "front_door_lock", "--text", "is it locked?", "-c", str(path))
    assert done.returncode == 2
    assert "front_door_lock: this rule accepts only images" in done.stderr


def test_queue_limit_refuses_new_input_naming_the_limit(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    ollama.latency = 1.0
    daemon(limits={"max_queued": 3})
    collector.wait_for("llm2mqtt/bridge/state")
    for i in range(8):
        collector.publish("llm2mqtt/message_topic/run", f"note number {i}")
    errors = collector.wait_for("llm2mqtt/message_topic/error", 3, timeout=20)
    assert all("limit (limits.max_queued) is 3" in e.json()["error"] for e in errors)
    # Each input has exactly one outcome: its result, or its refusal.
    outcomes = collector.wait_for(
        "llm2mqtt/message_topic/+", 8, timeout=30, where=lambda m: m.topic.endswith(("/result", "/error"))
    )
    assert len(outcomes) == 8
    assert 3 <= len(collector.on("llm2mqtt/message_topic/result")) <= 5


def test_journal_size_limit_refuses_new_input(daemon, collector: Collector, ollama: OllamaStandin) -> None:
    ollama.latency = 5.0  # the images stay with waiting jobs: nothing may be dropped to make room
    proc = daemon(journal={"max_size": "400KB"})
    collector.wait_for("llm2mqtt/bridge/state")
    # About 32 KB of journal each: 16 are well past the limit (12 came within a page or two of
    # it, and a journal with one index fewer stayed below).
    for _ in range(16):
        collector.publish(CAMERA, _noise_jpeg())
    error = collector.wait_for("llm2mqtt/front_door_lock/error", timeout=20)[0].json()
    assert "above journal.max_size (400,000)" in error["error"]
    assert "over journal.max_size" in proc.output()


def test_images_are_stored_only_when_sound_and_dropped_when_their_job_fails(
    daemon, collector: Collector
) -> None:
    proc = daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish(CAMERA, b"\xff\xd8\xff" + b"\x00garbage" * 100_000)
    assert "header" in collector.wait_for("llm2mqtt/front_door_lock/error")[0].json()["error"]
    assert _blobs(proc.config) == 0  # refused before anything was stored
    collector.publish(CAMERA, jpeg(200)[:400])  # a sound header, then the data breaks off
    error = collector.wait_for("llm2mqtt/front_door_lock/error", 2)[1].json()
    assert "decoded" in error["error"]
    collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_failed")
    assert _blobs(proc.config) == 0  # stored, then dropped with its failed job


def test_a_repeated_request_gets_the_first_ones_answer_on_its_own_response_topic(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    ollama.latency = 1.0
    daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    body = "the front door alarm is beeping, check security"
    collector.publish("llm2mqtt/message_topic/run", body, props=_props("replies/a", b"first"))
    collector.publish("llm2mqtt/message_topic/run", body, props=_props("replies/b", b"second"))
    a = collector.wait_for("replies/a")[0]
    b = collector.wait_for("replies/b")[0]
    assert (a.correlation_data, b.correlation_data) == (b"first", b"second")
    assert a.json() == b.json()
    assert b.json()["label"] == "security"
    # Asked again once it is done: answered at once, from the journal.
    collector.publish("llm2mqtt/message_topic/run", body, props=_props("replies/c", b"third"))
    c = collector.wait_for("replies/c")[0]
    assert (c.correlation_data, c.json()) == (b"third", a.json())
    # The same button pressed twice, no response topic: the result is published again.
    collector.publish("llm2mqtt/message_topic/run", body)
    results = collector.wait_for("llm2mqtt/message_topic/result", 2)
    assert results[1].json() == a.json()
    assert len(ollama.requests) == 1
    # Events (QoS 0) leave after the rows committed with them: wait for the third.
    skipped = collector.wait_for(
        "llm2mqtt/bridge/event", 3, where=lambda m: m.json()["type"] == "job_skipped"
    )
    assert len(skipped) == 3


def test_a_waiting_requester_is_answered_after_a_restart(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    ollama.latency = 30.0
    first = daemon(shutdown_grace=0.2)
    collector.wait_for("llm2mqtt/bridge/state")
    body = json.dumps({"text": "check security please"})
    collector.publish("llm2mqtt/message_topic/run", body, props=_props("replies/a", b"1"))
    collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_started")
    collector.publish("llm2mqtt/message_topic/run", body, props=_props("replies/b", b"2"))
    collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_skipped")
    assert first.stop() == 0
    ollama.latency = 0.0
    daemon()
    assert collector.wait_for("replies/b", timeout=20)[0].correlation_data == b"2"
    assert collector.wait_for("replies/a")[0].json() == collector.on("replies/b")[0].json()
