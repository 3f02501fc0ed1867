"""Every kind of bad input gives a clear error on the rule's error topic; the daemon keeps running."""

from io import BytesIO

import pytest
from PIL import Image

from tests.support.mqtt_helpers import Collector
from tests.support.ollama_standin import OllamaStandin
from tests.support.samples import jpeg

pytestmark = pytest.mark.broker


def _errors(collector: Collector, rule: str, count: int = 1) -> list[dict]:
    return [m.json() for m in collector.wait_for(f"llm2mqtt/{rule}/error", count)]


def _still_answers(collector: Collector) -> None:
    """The daemon is alive and answering after the bad input."""
    before = len(collector.on("llm2mqtt/message_topic/result"))
    collector.publish("llm2mqtt/message_topic/run", "buy milk for shopping")
    collector.wait_for("llm2mqtt/message_topic/result", before + 1)


@pytest.fixture
def running(daemon, collector: Collector) -> Collector:
    daemon(limits={"max_payload": "2MB", "max_image_pixels": 30_000_000})
    collector.wait_for("llm2mqtt/bridge/state")
    return collector


def big_jpeg_header(width: int, height: int) -> bytes:
    """A real JPEG, then its size in the SOF0 header rewritten: claims many pixels, holds few."""
    buffer = BytesIO()
    Image.new("RGB", (16, 16), (200, 200, 200)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (jpeg(200)[:400], "decoded"),
        (b"\xff\xd8\xff" + b"\x00garbage" * 50, "decoded"),
        (big_jpeg_header(10000, 10000), "megapixels"),
    ],
    ids=["truncated-jpeg", "corrupt-jpeg", "100-megapixel"],
)
def test_broken_images(running: Collector, payload: bytes, expected: str) -> None:
    running.publish("cameras/front_door/snapshot", payload)
    error = _errors(running, "front_door_lock")[0]
    assert expected in error["error"]
    assert error["input"]["source"] == "mqtt:cameras/front_door/snapshot"
    assert error["job_id"]
    _still_answers(running)


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        ("cameras/front_door/snapshot", b"\xff\xd8\xff" + bytes(3_000_000), "above the limit"),
        ("llm2mqtt/message_topic/run", b'{"text": "unclosed', "invalid JSON"),
        ("llm2mqtt/message_topic/run", b'{"text": 42}', "'text' must be a string"),
        ("llm2mqtt/message_topic/run", b'{"image": "%%%notbase64"}', "not valid base64"),
        ("llm2mqtt/message_topic/run", b"caf\xe9 \xff\xfe", "nor UTF-8 text"),
        ("llm2mqtt/message_topic/run", b"   ", "empty"),
    ],
    ids=["20mb-over-limit", "invalid-json", "wrong-shape", "bad-base64", "not-utf8", "blank"],
)
def test_bad_payloads(running: Collector, topic: str, payload: bytes, expected: str) -> None:
    running.publish(topic, payload)
    rule = "front_door_lock" if topic.startswith("cameras") else "message_topic"
    error = _errors(running, rule)[0]
    assert expected in error["error"]
    failed = running.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_failed")
    assert failed[0].json()["job_id"] == error["job_id"]
    _still_answers(running)


def test_unknown_rule_on_run_topic(running: Collector) -> None:
    running.publish("llm2mqtt/no_such_rule/run", "hello")
    error = _errors(running, "no_such_rule")[0]
    assert "unknown rule 'no_such_rule'" in error["error"]
    assert "front_door_lock" in error["error"]
    _still_answers(running)


def test_model_not_pulled(running: Collector, ollama: OllamaStandin) -> None:
    ollama.models = {"qwen2.5:3b"}  # the vision model is gone
    running.publish("cameras/front_door/snapshot", jpeg(200))
    error = _errors(running, "front_door_lock")[0]
    assert "run `ollama pull qwen2.5vl:3b`" in error["error"]
    _still_answers(running)


def test_answer_outside_schema_is_retried_once_then_fails(running: Collector, ollama: OllamaStandin) -> None:
    ollama.script_reply("I think it is locked")
    running.publish("cameras/front_door/snapshot", jpeg(200))
    assert running.wait_for("llm2mqtt/front_door_lock/result")[0].json()["answer"] is True
    assert len(ollama.requests) == 2  # the stricter second question got a valid answer
    assert "previous answer was refused" in ollama.requests[1].messages[-1]["content"]

    ollama.script_reply('{"answer": "maybe"}')
    ollama.script_reply("not json at all")
    running.publish("cameras/front_door/snapshot", jpeg(30))
    error = _errors(running, "front_door_lock")[0]
    assert "did not fit the schema, twice" in error["error"]
    _still_answers(running)


def test_busy_and_broken_stream_are_retried(running: Collector, ollama: OllamaStandin) -> None:
    ollama.fail_next(503)
    running.publish("cameras/front_door/snapshot", jpeg(220))
    assert running.wait_for("llm2mqtt/front_door_lock/result")[0].json()["state"] == "locked"
    ollama.break_next("error_line")
    running.publish("cameras/front_door/snapshot", jpeg(25))
    assert running.wait_for("llm2mqtt/front_door_lock/result", 2)[1].json()["state"] == "unlocked"
    ollama.break_next("disconnect")
    running.publish("cameras/front_door/snapshot", jpeg(240))
    assert running.wait_for("llm2mqtt/front_door_lock/result", 3)[2].json()["state"] == "locked"
    assert not running.on("llm2mqtt/front_door_lock/error")


def test_ollama_down_job_is_retried_then_dead(running: Collector, ollama: OllamaStandin) -> None:
    ollama.fail_next(503, count=100)  # busy on every call: retries run out
    running.publish("cameras/front_door/snapshot", jpeg(220))
    errors = _errors(running, "front_door_lock", 3)
    assert all("busy" in e["error"] for e in errors)
    assert [("retry_in_s" in e) for e in errors] == [True, True, False]
    assert "gave up after 3 attempts" in errors[-1]["error"]
    ollama.fail_next(503, count=0)


def test_ollama_unreachable_names_where_it_looked(daemon, collector: Collector) -> None:
    daemon(ollama={"url": "http://127.0.0.1:9", "retries": 0}, journal={"max_attempts": 1})
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish("llm2mqtt/message_topic/run", "anything")
    error = _errors(collector, "message_topic")[0]
    assert "cannot reach Ollama at http://127.0.0.1:9" in error["error"]
    failed = collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_failed")
    assert failed[0].json()["job_id"] == error["job_id"]


def test_request_over_its_timeout_is_not_retried_at_once_but_later(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    rule = {"name": "slow", "handler": "yes_no", "model": "qwen2.5:3b", "prompt": "Is it so?", "timeout": 1}
    daemon([rule])
    collector.wait_for("llm2mqtt/bridge/state")
    ollama.hang_next(3)
    collector.publish("llm2mqtt/slow/run", "yes it is")
    error = _errors(collector, "slow")[0]
    assert "did not answer within 1s" in error["error"]
    assert "retry_in_s" in error
    result = collector.wait_for("llm2mqtt/slow/result")[0].json()
    assert result["answer"] is True
    assert result["job_id"] == error["job_id"]
