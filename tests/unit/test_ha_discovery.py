"""Home Assistant discovery: pure payload tables."""

import json
from pathlib import Path
from typing import Any

import jinja2
import pytest

from bridge.config.homeassistant import slug_problems, slugify
from bridge.config.loader import load_config, rule_adapter
from bridge.config.rules import RuleBase
from bridge.errors import ConfigError
from bridge.homeassistant.discovery import Node, discovery, on_answer, removals, rule_entities

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
