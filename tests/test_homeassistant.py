"""Home Assistant discovery: pure payload tables, then the extension against a real broker."""

import json
from pathlib import Path
from typing import Any

import jinja2
import pytest

from bridge.errors import ConfigError
from bridge.homeassistant import Node, discovery, on_answer, removals, rule_entities, slug_problems, slugify
from bridge.loader import load_config, rule_adapter
from bridge.rules import RuleBase
from tests.mqtt_helpers import Collector, Mosquitto
from tests.samples import jpeg

LOCK: dict[str, Any] = {
    "name": "front_door_lock",
    "handler": "yes_no",
    "model": "qwen2.5vl:3b",
    "prompt": "Is it locked?",
    "labels": {"true": "locked", "false": "unlocked"},
    "homeassistant": {"device_class": "lock", "name": "Front door"},
}
NODE = Node("llm2mqtt", "homeassistant", "1.2.3")
_jinja = jinja2.Environment(autoescape=False)


def rule(**overrides: Any) -> RuleBase:
    data = {**LOCK, **overrides}
    return rule_adapter().validate_python({k: v for k, v in data.items() if v is not None})  # type: ignore[no-any-return]


def configs(r: RuleBase) -> dict[str, dict[str, Any]]:
    return {topic: payload for topic, payload in rule_entities(NODE, r)}


def render(template: str, value: Any) -> str:
    """Home Assistant's value templates are Jinja with `value_json`; render them the same way."""
    return _jinja.from_string(template).render(value_json=value).strip()


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("front_door_lock", "front_door_lock"),
        ("a__b", "a__b"),  # already an object id: kept as it is, so entity ids never move
        ("Front Door", "front_door"),
        ("Café-Bar 2", "cafe_bar_2"),
        ("玄関 lock", "lock"),
        ("  spaced  out ", "spaced_out"),
        ("!!!", ""),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["front_door", "back_door"], []),
        (["Front Door", "front_door"], ["'front_door' gives the same Home Assistant id 'front_door'"]),
        (["same", "same"], []),  # an exact duplicate is reported by the unique-name check
        (["!!!"], ["has no letters or digits"]),
    ],
)
def test_colliding_slugs_are_config_errors(names: list[str], expected: list[str]) -> None:
    problems = slug_problems((name, f"rules/{i}.yaml") for i, name in enumerate(names))
    assert len(problems) == len(expected)
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem


@pytest.mark.parametrize(
    ("device_class", "labels", "explicit", "on_when"),
    [
        (None, {"true": "locked", "false": "unlocked"}, None, True),  # no class: yes is on
        ("lock", {"true": "locked", "false": "unlocked"}, None, False),  # locked -> off
        ("lock", {"true": "unlocked", "false": "locked"}, None, True),  # "is it unlocked?"
        ("lock", None, None, False),  # y/n labels: a lock rule asks "is it locked?"
        ("door", {"true": "open", "false": "closed"}, None, True),
        ("door", {"true": "closed", "false": "open"}, False, False),  # said explicitly
        ("lock", {"true": "locked", "false": "unlocked"}, True, True),  # explicit wins
    ],
)
def test_binary_sensor_polarity(
    device_class: str | None, labels: dict[str, str] | None, explicit: bool | None, on_when: bool
) -> None:
    options = {"device_class": device_class, "on_answer": explicit}
    r = rule(labels=labels, homeassistant={k: v for k, v in options.items() if v is not None})
    assert on_answer(r) is on_when
    template = configs(r)[f"homeassistant/binary_sensor/llm2mqtt/{r.name}/config"]["value_template"]
    assert render(template, {"answer": on_when}) == "ON"
    assert render(template, {"answer": not on_when}) == "OFF"


SCHEDULED = {"schedule": {"every": "10m"}, "snapshot": {"url": "http://camera.local/snap.jpg"}}


@pytest.mark.parametrize(
    ("overrides", "entities"),
    [
        (
            {},
            {"binary_sensor/front_door_lock", "image/front_door_lock_image", "event/front_door_lock_job"},
        ),
        (
            SCHEDULED,
            {
                "binary_sensor/front_door_lock",
                "image/front_door_lock_image",
                "event/front_door_lock_job",
                "button/front_door_lock_check",
                "switch/front_door_lock_paused",
            },
        ),
        (
            {"handler": "classify", "labels": ["a", "b"], "homeassistant": None, "name": "room"},
            {"sensor/room", "image/room_image", "event/room_job"},
        ),
        (
            {"handler": "describe", "labels": None, "homeassistant": None, "name": "scene"},
            {"sensor/scene", "image/scene_image", "event/scene_job"},
        ),
        ({"homeassistant": {"enabled": False}}, set()),
        ({"enabled": False}, set()),
    ],
)
def test_entities_per_rule(overrides: dict[str, Any], entities: set[str]) -> None:
    found = {
        topic.removeprefix("homeassistant/").removesuffix("/config") for topic in configs(rule(**overrides))
    }
    assert found == {f"{e.split('/')[0]}/llm2mqtt/{e.split('/')[1]}" for e in entities}


def test_entity_payloads_by_handler() -> None:
    lock = configs(rule(**SCHEDULED))
    sensor = lock["homeassistant/binary_sensor/llm2mqtt/front_door_lock/config"]
    assert sensor["device_class"] == "lock"
    assert sensor["name"] is None  # the device's name alone
    assert sensor["state_topic"] == sensor["json_attributes_topic"] == "llm2mqtt/front_door_lock/result"
    assert sensor["unique_id"] == "llm2mqtt_front_door_lock"
    assert sensor["object_id"] == "front_door_lock"
    assert sensor["device"]["name"] == "Front door"
    assert sensor["device"]["via_device"] == "llm2mqtt_bridge"
    assert sensor["origin"] == {"name": "llm2mqtt", "sw_version": "1.2.3"}
    assert sensor["availability_topic"] == "llm2mqtt/bridge/state"
    assert render(sensor["availability_template"], {"state": "offline"}) == "offline"
    image = lock["homeassistant/image/llm2mqtt/front_door_lock_image/config"]
    assert (image["image_topic"], image["content_type"]) == ("llm2mqtt/front_door_lock/image", "image/jpeg")
    button = lock["homeassistant/button/llm2mqtt/front_door_lock_check/config"]
    assert button["command_topic"] == "llm2mqtt/front_door_lock/check"
    switch = lock["homeassistant/switch/llm2mqtt/front_door_lock_paused/config"]
    assert (switch["command_topic"], switch["state_topic"]) == (
        "llm2mqtt/front_door_lock/paused/set",
        "llm2mqtt/front_door_lock/paused",
    )
    assert (switch["payload_on"], switch["payload_off"]) == ("ON", "OFF")

    classify = configs(rule(handler="classify", labels=["shopping", "chores"], homeassistant=None))
    enum = classify["homeassistant/sensor/llm2mqtt/front_door_lock/config"]
    assert (enum["device_class"], enum["options"]) == ("enum", ["shopping", "chores"])
    assert render(enum["value_template"], {"label": "chores"}) == "chores"

    extract = configs(
        rule(
            handler="extract",
            labels=None,
            schema={"type": "object"},
            homeassistant={"device_class": "temperature"},
        )
    )
    record = extract["homeassistant/sensor/llm2mqtt/front_door_lock/config"]
    assert record["device_class"] == "temperature"
    assert render(record["value_template"], {"state": "x" * 300}) == "x" * 255


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"type": "job_done", "rule": "front_door_lock", "job_id": "j1"},
            {"event_type": "done", "job_id": "j1"},
        ),
        (
            {"type": "job_failed", "rule": "front_door_lock", "job_id": "j2", "error": "boom"},
            {"event_type": "failed", "job_id": "j2", "error": "boom"},
        ),
        (
            {"type": "job_skipped", "rule": "front_door_lock", "job_id": "j3", "reason": "unchanged"},
            {"event_type": "skipped", "job_id": "j3", "error": "unchanged"},
        ),
        ({"type": "job_started", "rule": "front_door_lock", "job_id": "j4"}, None),
        ({"type": "job_done", "rule": "other_rule", "job_id": "j5"}, None),
    ],
)
def test_event_entity_picks_its_rules_finished_jobs(
    event: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    config = configs(rule())["homeassistant/event/llm2mqtt/front_door_lock_job/config"]
    assert config["event_types"] == ["done", "failed", "skipped"]
    rendered = render(config["value_template"], event)
    if expected is None:
        assert rendered == ""  # Home Assistant ignores an empty payload
    else:
        parsed = json.loads(rendered)
        assert {k: v for k, v in parsed.items() if v is not None} == expected


def test_bridge_diagnostics() -> None:
    found = {json.loads(p)["object_id"]: json.loads(p) for t, p in discovery(NODE, []).items()}
    assert set(found) == {
        "llm2mqtt_connected",
        "llm2mqtt_queue_depth",
        "llm2mqtt_running",
        "llm2mqtt_last_model_latency",
        "llm2mqtt_jobs_failed",
        "llm2mqtt_loaded_model",
    }
    stats = {"queue_depth": 3, "running": 1, "jobs_failed": 2, "last_model_ms": 812.4, "rules": {}}
    assert render(found["llm2mqtt_queue_depth"]["value_template"], stats) == "3"
    assert render(found["llm2mqtt_last_model_latency"]["value_template"], stats) == "812.4"
    assert render(found["llm2mqtt_last_model_latency"]["value_template"], {"last_model_ms": None}) == "None"
    assert render(found["llm2mqtt_jobs_failed"]["value_template"], stats) == "2"
    assert (
        render(found["llm2mqtt_loaded_model"]["value_template"], ["qwen2.5vl:3b", "x"]) == "qwen2.5vl:3b, x"
    )
    assert found["llm2mqtt_last_model_latency"]["entity_category"] == "diagnostic"
    assert "availability_topic" not in found["llm2mqtt_connected"]  # it reports the availability itself
    assert all(p["device"]["identifiers"] == ["llm2mqtt_bridge"] for p in found.values())


def test_discovery_prefix_and_base_topic_are_honoured() -> None:
    node = Node("home/llm", "ha", "1")
    topics = discovery(node, [rule()])
    assert all(t.startswith("ha/") and t.endswith("/config") for t in topics)
    payload = json.loads(topics["ha/binary_sensor/home_llm/front_door_lock/config"])
    assert payload["state_topic"] == "home/llm/front_door_lock/result"
    assert payload["unique_id"] == "home_llm_front_door_lock"


@pytest.mark.parametrize(
    ("before", "now", "gone"),
    [
        ([], ["a"], []),
        (["a", "b"], ["a"], ["b"]),
        (["a", "b"], ["c"], ["a", "b"]),
        (["a"], ["a", "b"], []),
    ],
)
def test_removals(before: list[str], now: list[str], gone: list[str]) -> None:
    assert removals(before, now) == gone


def _write(folder: Path, config: str, **rules: str) -> Path:
    (folder / "rules").mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(config)
    for name, text in rules.items():
        (folder / "rules" / f"{name}.yaml").write_text(text)
    return folder / "config.yaml"


def test_config_keys_and_their_errors(tmp_path: Path) -> None:
    head = "name: door\nhandler: yes_no\nmodel: m\nprompt: p\n"
    good = head + "homeassistant: {device_class: lock, icon: 'mdi:lock'}\n"
    config = load_config(_write(tmp_path / "ok", "homeassistant: {discovery_prefix: ha}\n", door=good), {})
    assert config.settings.homeassistant.discovery_prefix == "ha"
    assert config.settings.homeassistant.status_topic == "homeassistant/status"
    assert config.rules[0].homeassistant.device_class == "lock"

    bad_class = (
        "name: door\nhandler: yes_no\nmodel: m\nprompt: p\nhomeassistant: {device_class: thermostat}\n"
    )
    bad_key = "name: room\nhandler: yes_no\nmodel: m\nprompt: p\nhomeassistant: {colour: red}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(
            _write(tmp_path / "bad", "homeassistant: {status_topic: 'ha/#'}\n", door=bad_class, room=bad_key),
            {},
        )
    text = "\n".join(caught.value.problems)
    assert "'thermostat' is not a binary_sensor class" in text
    assert "homeassistant.colour" in text
    assert "homeassistant.status_topic" in text


# -- the extension, with a real broker and daemon ------------------------------------------------

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
    expected = len(discovery(NODE, [rule(**SNAPSHOT_RULE)]))
    retained = _retained(broker.port, "homeassistant/#", expected)
    config = json.loads(retained["homeassistant/binary_sensor/llm2mqtt/front_door_lock/config"])
    assert config["device_class"] == "lock"
    assert config["origin"]["name"] == "llm2mqtt"

    collector.publish("cameras/front_door/snapshot", jpeg(230))
    image = collector.wait_for("llm2mqtt/front_door_lock/image")[0]
    assert image.payload[:2] == b"\xff\xd8"  # the JPEG the model judged
    assert _retained(broker.port, "llm2mqtt/front_door_lock/image", 1)


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
    image = collector.wait_for("llm2mqtt/front_door_lock/image")[0].payload
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
