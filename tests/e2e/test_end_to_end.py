"""Snapshot or text in over MQTT, validated answer out over MQTT, through the real daemon."""

import json

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.camera import Camera
from tests.support.mqtt_helpers import Collector
from tests.support.ollama_standin import OllamaStandin
from tests.support.samples import jpeg, png

pytestmark = pytest.mark.broker


def test_bridge_announces_itself_online_with_info(daemon, collector: Collector, broker) -> None:
    daemon()
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    collector.wait_for("llm2mqtt/bridge/info")
    late = Collector(broker.port, ["llm2mqtt/bridge/#"])  # sees only what is retained
    try:
        state = late.wait_for("llm2mqtt/bridge/state")[0]
        info = late.wait_for("llm2mqtt/bridge/info")[0]
    finally:
        late.close()
    assert state.retain
    assert state.json() == {"state": "online"}
    assert info.retain
    info = info.json()
    assert {r["name"] for r in info["rules"]} == {"front_door_lock", "message_topic"}
    assert "qwen2.5vl:3b" in info["models"]


def test_bright_and_dark_snapshots_give_locked_and_unlocked(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish("cameras/front_door/snapshot", jpeg(230))
    first = collector.wait_for("llm2mqtt/front_door_lock/result")[0].json()
    collector.publish("cameras/front_door/snapshot", jpeg(20))
    second = collector.wait_for("llm2mqtt/front_door_lock/result", 2)[1].json()

    assert (first["answer"], first["state"]) == (True, "locked")
    assert (second["answer"], second["state"]) == (False, "unlocked")
    states = [m.payload.decode() for m in collector.wait_for("llm2mqtt/front_door_lock/state", 2)]
    assert states == ["locked", "unlocked"]
    for result in (first, second):
        assert result["rule"] == "front_door_lock"
        assert result["source"] == "mqtt:cameras/front_door/snapshot"
        assert result["model"] == "qwen2.5vl:3b"
        assert set(result["timings"]) == {"queued", "llm", "load", "prompt_eval", "eval", "total"}
        assert result["tokens"]["prompt"] > 0
        assert result["tokens"]["eval"] > 0
        assert result["image"] == {"width": 256, "height": 192}
    # The stand-in really saw the prepared image, structured output was asked, temperature 0.
    request = ollama.requests[0]
    assert request.brightness[0] > 200
    assert request.keep_alive == "10m"
    assert request.format["properties"]["answer"] == {"type": "boolean"}
    assert request.options["temperature"] == 0
    events = [
        m.json() for m in collector.on("llm2mqtt/bridge/event") if m.json()["job_id"] == first["job_id"]
    ]
    assert [e["type"] for e in events] == ["job_queued", "job_started", "job_done"]


def test_json_input_with_base64_png_and_template_fields(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    rule = {
        "name": "room_light",
        "handler": "yes_no",
        "model": "qwen2.5vl:3b",
        "prompt": "Is the light on in the {{ room }}?",
    }
    daemon([rule])
    collector.wait_for("llm2mqtt/bridge/state")
    import base64

    body = {"id": "req-1", "image": base64.b64encode(png(240)).decode(), "room": "kitchen"}
    collector.publish("llm2mqtt/room_light/run", json.dumps(body))
    result = collector.wait_for("llm2mqtt/room_light/result")[0].json()
    assert result["answer"] is True
    assert result["state"] == "y"
    assert result["id"] == "req-1"
    assert "kitchen" in ollama.requests[0].text


def test_text_classify_and_mqtt5_response_topic(daemon, collector: Collector) -> None:
    daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "replies/abc"
    props.CorrelationData = b"\x01corr"
    collector.publish(
        "llm2mqtt/message_topic/run", "the front door alarm is beeping, check security", props=props
    )
    reply = collector.wait_for("replies/abc")[0]
    assert reply.correlation_data == b"\x01corr"
    assert reply.json()["label"] == "security"
    assert collector.wait_for("llm2mqtt/message_topic/state")[0].payload == b"security"


def test_stats_topic_counts_jobs_per_rule(daemon, collector: Collector) -> None:
    daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish("llm2mqtt/message_topic/run", "buy bread for shopping")
    collector.publish("cameras/front_door/snapshot", b"\xff\xfe neither image nor text")
    collector.wait_for("llm2mqtt/message_topic/result")

    def settled(m) -> bool:
        stats = m.json()
        return stats["jobs_done"] == 1 and stats["jobs_failed"] == 1 and stats["queue_depth"] == 0

    stats = collector.wait_for("llm2mqtt/bridge/stats", where=settled)[-1].json()
    assert stats["rules"]["message_topic"]["done"] == 1
    assert stats["rules"]["message_topic"]["model_calls"] == 1
    assert stats["last_model_ms"] is not None
    assert stats["running"] == 0


def test_image_url_is_fetched(daemon, collector: Collector, ollama: OllamaStandin) -> None:
    camera = Camera(jpeg(235))
    try:
        daemon()
        collector.wait_for("llm2mqtt/bridge/state")
        collector.publish("llm2mqtt/front_door_lock/run", json.dumps({"image_url": camera.url}))
        result = collector.wait_for("llm2mqtt/front_door_lock/result")[0].json()
        assert result["state"] == "locked"
        assert ollama.requests[0].brightness[0] > 200
        camera.mode = "html"
        collector.publish("llm2mqtt/front_door_lock/run", json.dumps({"image_url": camera.url, "id": "page"}))
        error = collector.wait_for("llm2mqtt/front_door_lock/error")[0].json()
        assert "sent text/html, not an image" in error["error"]
    finally:
        camera.close()


def test_mqtt_311_works_too(daemon, collector: Collector) -> None:
    daemon(mqtt={"protocol": "3.1.1"})
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    collector.publish("cameras/front_door/snapshot", jpeg(10))
    assert collector.wait_for("llm2mqtt/front_door_lock/state")[0].payload == b"unlocked"


def test_models_topic_lists_what_ollama_has_loaded(daemon, collector: Collector) -> None:
    daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish("llm2mqtt/message_topic/run", "fix the sink")
    collector.wait_for("llm2mqtt/message_topic/result")
    models = collector.wait_for("llm2mqtt/bridge/models", where=lambda m: m.json() != [])[-1]
    assert models.json() == ["qwen2.5:3b"]
