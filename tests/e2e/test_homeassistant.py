"""Home Assistant discovery: the extension against a real broker."""

import json
from typing import Any

import pytest

from bridge.config.loader import rule_adapter
from bridge.homeassistant.discovery import Node, discovery
from bridge.homeassistant.extension import placeholder_image
from tests.conftest import TOPIC_RULE
from tests.support.mqtt_helpers import Collector, Mosquitto
from tests.support.samples import jpeg

LOCK: dict[str, Any] = {
    "name": "front_door_lock",
    "handler": "yes_no",
    "model": "qwen2.5vl:3b",
    "prompt": "Is it locked?",
    "labels": {"true": "locked", "false": "unlocked"},
    "homeassistant": {"device_class": "lock", "name": "Front door"},
}
NODE = Node("llm2mqtt", "homeassistant", "1.2.3")
SNAPSHOT_RULE = {**LOCK, "inputs": [{"mqtt": "cameras/front_door/snapshot"}], "image": {"max_side": 256}}


@pytest.fixture
def ha_listener(broker: Mosquitto) -> Any:
    client = Collector(broker.port, ["homeassistant/#"])
    yield client
    client.close()


def _retained(port: int, topic: str, count: int) -> dict[str, bytes]:
    late = Collector(port, [topic])
    try:
        return {m.topic: m.payload for m in late.wait_for(topic, count)}
    finally:
        late.close()


@pytest.mark.broker
def test_discovery_is_retained_and_image_published(daemon, collector: Collector, broker: Mosquitto) -> None:
    daemon([SNAPSHOT_RULE])
    collector.wait_for("llm2mqtt/bridge/state")
    expected = len(discovery(NODE, [rule_adapter().validate_python(SNAPSHOT_RULE)]))
    retained = _retained(broker.port, "homeassistant/#", expected)
    config = json.loads(retained["homeassistant/binary_sensor/llm2mqtt/front_door_lock/config"])
    assert config["device_class"] == "lock"
    assert config["origin"]["name"] == "llm2mqtt"

    collector.publish("cameras/front_door/snapshot", jpeg(230))
    image = collector.wait_for("llm2mqtt/front_door_lock/image")[0]
    assert image.payload[:2] == b"\xff\xd8"  # the JPEG the model judged
    assert _retained(broker.port, "llm2mqtt/front_door_lock/image", 1)


@pytest.mark.broker
def test_pictures_only_where_a_rule_takes_them(
    daemon, collector: Collector, broker: Mosquitto, ha_listener: Collector
) -> None:
    text_rule = {**TOPIC_RULE, "name": "room"}
    # Left by an older version, which gave every rule an image entity (not in the published list).
    old = "homeassistant/image/llm2mqtt/room_image/config"
    collector.publish(old, json.dumps({"image_topic": "llm2mqtt/room/image"}), retain=True)
    ha_listener.wait_for(old)
    daemon([SNAPSHOT_RULE, text_rule])
    collector.wait_for("llm2mqtt/bridge/state")
    # Before the first job the image entity has a placeholder picture to show (not an HTTP 500).
    image = "llm2mqtt/front_door_lock/image"
    assert _retained(broker.port, image, 1)[image] == placeholder_image()
    ha_listener.wait_for(old, where=lambda m: m.payload == b"")  # cleared
    ha_listener.wait_for("homeassistant/sensor/llm2mqtt/room/config")
    late = Collector(broker.port, ["homeassistant/#"])
    try:
        rules = [rule_adapter().validate_python(r) for r in (SNAPSHOT_RULE, text_rule)]
        everything = len(discovery(NODE, rules))
        late.wait_for("homeassistant/#", everything)
        assert old not in {m.topic for m in late.messages}  # nothing retained there any more
    finally:
        late.close()
    # The first judged picture replaces the placeholder.
    collector.publish("cameras/front_door/snapshot", jpeg(230))
    collector.wait_for("llm2mqtt/front_door_lock/result")
    assert _retained(broker.port, image, 1)[image] != placeholder_image()


@pytest.mark.broker
def test_home_assistant_online_republishes_discovery_and_states(
    daemon, collector: Collector, ha_listener: Collector
) -> None:
    daemon([SNAPSHOT_RULE])
    collector.wait_for("llm2mqtt/bridge/state")
    first = len(ha_listener.wait_for("homeassistant/binary_sensor/llm2mqtt/front_door_lock/config"))
    collector.publish("cameras/front_door/snapshot", jpeg(20))
    collector.wait_for("llm2mqtt/front_door_lock/result")
    collector.publish("homeassistant/status", "online")
    ha_listener.wait_for("homeassistant/binary_sensor/llm2mqtt/front_door_lock/config", first + 1)
    results = collector.wait_for("llm2mqtt/front_door_lock/result", 2)
    assert results[0].json()["job_id"] == results[1].json()["job_id"]  # the same answer, again
    assert collector.wait_for("llm2mqtt/front_door_lock/state", 2)[1].payload == b"unlocked"
    collector.publish("homeassistant/status", "offline")  # not a reason to republish


@pytest.mark.broker
def test_a_removed_rule_loses_its_entities(
    daemon, collector: Collector, broker: Mosquitto, ha_listener: Collector
) -> None:
    other = {
        **SNAPSHOT_RULE,
        "name": "back_door_lock",
        "inputs": [],
        "homeassistant": {"device_class": "lock"},
    }
    first = daemon([SNAPSHOT_RULE, other])
    gone = "homeassistant/binary_sensor/llm2mqtt/back_door_lock/config"
    ha_listener.wait_for(gone)
    first.stop()
    daemon([SNAPSHOT_RULE])
    # An empty retained config is how Home Assistant is told to remove an entity.
    ha_listener.wait_for(gone, where=lambda m: m.payload == b"")
    ha_listener.wait_for(
        "homeassistant/+/llm2mqtt/back_door_lock_image/config", where=lambda m: m.payload == b""
    )
    left = Collector(broker.port, ["homeassistant/#"])
    try:
        kept = {m.topic for m in left.wait_for("homeassistant/+/llm2mqtt/+/config", 9)}
    finally:
        left.close()
    assert not [t for t in kept if "back_door" in t]
    assert "homeassistant/binary_sensor/llm2mqtt/front_door_lock/config" in kept


@pytest.mark.broker
def test_a_broker_that_lost_its_retained_messages_gets_them_again(
    daemon, collector: Collector, broker: Mosquitto
) -> None:
    daemon([SNAPSHOT_RULE])
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish("cameras/front_door/snapshot", jpeg(20))
    collector.wait_for("llm2mqtt/front_door_lock/result")
    broker.stop()
    for saved in broker.workdir.glob("*.db"):
        saved.unlink()  # the broker comes back with nothing retained
    broker.start()
    config = "homeassistant/binary_sensor/llm2mqtt/front_door_lock/config"
    watcher = Collector(broker.port, ["homeassistant/#"])
    try:
        watcher.wait_for(config)  # the bridge reconnected and published discovery again
    finally:
        watcher.close()
    late = Collector(broker.port, ["homeassistant/#", "llm2mqtt/bridge/state"])
    try:
        # A Home Assistant connecting now finds all of it retained.
        assert late.wait_for("llm2mqtt/bridge/state")[0].json() == {"state": "online"}
        assert late.wait_for(config)[0].retain
    finally:
        late.close()


@pytest.mark.broker
def test_last_result_and_image_come_back_from_the_journal_after_a_restart(
    daemon, collector: Collector, broker: Mosquitto
) -> None:
    first = daemon([SNAPSHOT_RULE])
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish("cameras/front_door/snapshot", jpeg(20))
    result = collector.wait_for("llm2mqtt/front_door_lock/result")[0].json()
    # The judged picture, not the placeholder the entity shows before the first job.
    judged = collector.wait_for(
        "llm2mqtt/front_door_lock/image", where=lambda m: m.payload != placeholder_image()
    )
    image = judged[-1].payload
    first.stop()
    # A job costs the extension no file of its own: the journal already holds both.
    assert sorted(p.name for p in (first.config.parent / "data" / "homeassistant").iterdir()) == [
        "discovery_topics.json"
    ]
    broker.stop()
    for saved in broker.workdir.glob("*.db"):
        saved.unlink()  # nothing retained survives
    broker.start()
    daemon([SNAPSHOT_RULE])
    late = Collector(broker.port, ["llm2mqtt/front_door_lock/#", "llm2mqtt/bridge/state"])
    try:
        late.wait_for("llm2mqtt/bridge/state")
        assert late.wait_for("llm2mqtt/front_door_lock/image")[0].payload == image  # prepared again
        late.publish("homeassistant/status", "online")
        assert late.wait_for("llm2mqtt/front_door_lock/result")[0].json() == result
        assert late.wait_for("llm2mqtt/front_door_lock/state")[0].payload == b"unlocked"
    finally:
        late.close()
    assert (
        json.loads(
            _retained(broker.port, "llm2mqtt/front_door_lock/result", 1)["llm2mqtt/front_door_lock/result"]
        )
        == result
    )
