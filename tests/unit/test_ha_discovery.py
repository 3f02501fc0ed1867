"""Home Assistant discovery: pure payload tables."""

import io
import json
from pathlib import Path
from typing import Any

import jinja2
import pytest
from PIL import Image

from bridge.config.homeassistant import slug_problems, slugify
from bridge.config.loader import load_config, rule_adapter
from bridge.config.rules import RuleBase
from bridge.errors import ConfigError
from bridge.homeassistant.discovery import Node, absent_images, discovery, removals, rule_entities
from bridge.homeassistant.extension import placeholder_image
from bridge.homeassistant.kinds import device_class, on_answer
from tests.support.ha_harness import blueprint_entity_filter, picker_offers

LOCK: dict[str, Any] = {
    "name": "front_door_lock",
    "handler": "yes_no",
    "model": "qwen2.5vl:3b",
    "prompt": "Is it locked?",
    "labels": {"true": "locked", "false": "unlocked"},
    "homeassistant": {"device_class": "lock", "name": "Front door"},
}
NODE = Node("llm2mqtt", "homeassistant", "1.2.3")
ROOT = Path(__file__).resolve().parents[2]
BLUEPRINTS = ROOT / "homeassistant" / "blueprints" / "automation" / "llm2mqtt"
LOCK_BLUEPRINT = BLUEPRINTS / "lock_unlocked_notify.yaml"
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
        (None, {"true": "home", "false": "away"}, None, True),  # no class: yes is on
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


@pytest.mark.parametrize(
    ("labels", "homeassistant", "expected_class", "on_when"),
    [
        ({"true": "locked", "false": "unlocked"}, {}, "lock", False),  # the shipped rule's labels
        ({"true": "Unlocked", "false": "LOCKED"}, {}, "lock", True),  # any case; "is it unlocked?"
        ({"true": " locked ", "false": "unlocked"}, {}, "lock", False),
        ({"true": "施錠", "false": "解錠"}, {}, "lock", False),
        ({"true": "開錠", "false": "施錠"}, {}, "lock", True),
        ({"true": "施錠中", "false": "解錠中"}, {}, "lock", False),
        ({"true": "locked", "false": "locked"}, {}, None, True),  # not a pair: no guess
        ({"true": "locked", "false": "open"}, {}, None, True),
        ({"true": "closed", "false": "open"}, {}, None, True),
        (None, {}, None, True),  # y/n
        ({"true": "locked", "false": "unlocked"}, {"device_class": None}, None, True),  # null: plain on/off
        ({"true": "locked", "false": "unlocked"}, {"device_class": "door"}, "door", True),  # written wins
    ],
)
def test_lock_labels_make_a_lock_sensor(
    labels: dict[str, str] | None, homeassistant: dict[str, Any], expected_class: str | None, on_when: bool
) -> None:
    data = {k: v for k, v in LOCK.items() if k != "homeassistant"}
    r = rule_adapter().validate_python({**data, "labels": labels, "homeassistant": homeassistant})
    assert device_class(r) == expected_class
    sensor = configs(r)["homeassistant/binary_sensor/llm2mqtt/front_door_lock/config"]
    assert sensor.get("device_class") == expected_class
    assert render(sensor["value_template"], {"answer": on_when}) == "ON"
    assert render(sensor["value_template"], {"answer": not on_when}) == "OFF"


def test_the_shipped_lock_rule_fits_the_lock_blueprint() -> None:
    config = load_config(ROOT / "config.yaml", {})
    lock = next(r for r in config.rules if r.name == "front_door_lock")
    assert lock.homeassistant.device_class == "lock"
    sensor = configs(lock)["homeassistant/binary_sensor/llm2mqtt/front_door_lock/config"]
    assert render(sensor["value_template"], {"answer": True}) == "OFF"  # locked is off
    filters = blueprint_entity_filter(LOCK_BLUEPRINT, "lock_sensor")
    assert picker_offers(filters, "binary_sensor.front_door_lock", sensor["device_class"])
    assert not picker_offers(filters, "binary_sensor.front_door_lock", None)
    assert "homeassistant/image/llm2mqtt/front_door_lock_image/config" in configs(lock)
    assert picker_offers(
        blueprint_entity_filter(LOCK_BLUEPRINT, "snapshot"), "image.front_door_lock_image", None
    )


SCHEDULED = {"schedule": {"every": "10m"}, "snapshot": {"url": "http://camera.local/snap.jpg"}}
TODO = {"handler": "todo_match", "labels": None, "homeassistant": None, "name": "todo_note"}


@pytest.mark.parametrize(
    ("overrides", "entities"),
    [
        (
            {"image": {"max_side": 640}},
            {"binary_sensor/front_door_lock", "image/front_door_lock_image", "event/front_door_lock_job"},
        ),
        ({}, {"binary_sensor/front_door_lock", "event/front_door_lock_job"}),  # no image: key
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
        (  # text only: no image entity
            {"handler": "classify", "labels": ["a", "b"], "homeassistant": None, "name": "room"},
            {"sensor/room", "event/room_job"},
        ),
        (
            {"handler": "describe", "labels": None, "homeassistant": None, "name": "scene", "image": {}},
            {"sensor/scene", "image/scene_image", "event/scene_job"},
        ),
        (
            {"handler": "describe", "labels": None, "homeassistant": {"image": True}, "name": "scene"},
            {"sensor/scene", "image/scene_image", "event/scene_job"},
        ),
        (
            {**SCHEDULED, "homeassistant": {"image": False}},
            {
                "binary_sensor/front_door_lock",
                "event/front_door_lock_job",
                "button/front_door_lock_check",
                "switch/front_door_lock_paused",
            },
        ),
        (  # accepts said outright
            {
                "handler": "classify",
                "labels": ["a", "b"],
                "homeassistant": None,
                "name": "room",
                "accepts": "any",
            },
            {"sensor/room", "image/room_image", "event/room_job"},
        ),
        (
            {**SCHEDULED, "accepts": "text"},
            {
                "binary_sensor/front_door_lock",
                "event/front_door_lock_job",
                "button/front_door_lock_check",
                "switch/front_door_lock_paused",
            },
        ),
        (TODO, {"sensor/todo_note", "event/todo_note_job"}),
        ({**TODO, "homeassistant": {"events": []}}, {"sensor/todo_note"}),
        ({**TODO, "image": {"max_side": 512}}, {"sensor/todo_note", "event/todo_note_job"}),
        ({"homeassistant": {"enabled": False}}, set()),
        ({"enabled": False}, set()),
    ],
)
def test_entities_per_rule(overrides: dict[str, Any], entities: set[str]) -> None:
    found = {
        topic.removeprefix("homeassistant/").removesuffix("/config") for topic in configs(rule(**overrides))
    }
    assert found == {f"{e.split('/')[0]}/llm2mqtt/{e.split('/')[1]}" for e in entities}
    # A rule without an image entity has its image config cleared (an empty retained message).
    cleared = absent_images(NODE, [rule(**overrides)])
    assert bool(cleared) == (not any(e.startswith("image/") for e in entities))
    assert all(t.startswith("homeassistant/image/llm2mqtt/") and t.endswith("_image/config") for t in cleared)


def test_text_only_rules_cannot_ask_for_an_image(tmp_path: Path) -> None:
    note = "name: note\nhandler: todo_match\nmodel: m\nprompt: p\nhomeassistant: {image: true}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, "", note=note), {})
    assert "homeassistant.image: a todo_match rule reads only text" in "\n".join(caught.value.problems)


def test_placeholder_is_a_small_jpeg() -> None:
    picture = placeholder_image()
    assert picture[:2] == b"\xff\xd8"
    assert len(picture) < 4000
    assert Image.open(io.BytesIO(picture)).size == (160, 120)


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
    default = configs(rule())["homeassistant/event/llm2mqtt/front_door_lock_job/config"]
    assert default["event_types"] == ["done", "failed"]
    if event["type"] == "job_skipped":  # skips fire only when asked for: 144 a day at every: 10m
        assert render(default["value_template"], event) == ""
    options = {**LOCK["homeassistant"], "events": ["done", "failed", "skipped"]}
    config = configs(rule(homeassistant=options))["homeassistant/event/llm2mqtt/front_door_lock_job/config"]
    assert config["event_types"] == ["done", "failed", "skipped"]
    rendered = render(config["value_template"], event)
    if expected is None:
        assert rendered == ""  # Home Assistant ignores an empty payload
    else:
        parsed = json.loads(rendered)
        assert {k: v for k, v in parsed.items() if v is not None} == expected


def test_event_entity_offers_only_the_events_the_bridge_publishes() -> None:
    options = {**LOCK["homeassistant"], "events": ["done", "failed", "skipped"]}
    topic = "homeassistant/event/llm2mqtt/front_door_lock_job/config"
    quiet = Node("llm2mqtt", "homeassistant", "1.2.3", frozenset({"job_done", "job_started"}))
    config = dict(rule_entities(quiet, rule(homeassistant=options)))[topic]
    assert config["event_types"] == ["failed", "skipped"]
    assert render(config["value_template"], {"type": "job_done", "rule": "front_door_lock"}) == ""
    silent = Node("llm2mqtt", "homeassistant", "1.2.3", frozenset({"job_done", "job_failed", "job_skipped"}))
    assert topic not in dict(rule_entities(silent, rule(homeassistant=options)))  # no events: no entity


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


def test_backend_reachable_sensors_read_bridge_health() -> None:
    pairs = discovery(NODE, [], ["ollama", "pc"])
    found = {json.loads(p)["object_id"]: json.loads(p) for p in pairs.values()}
    ollama, pc = found["llm2mqtt_ollama_reachable"], found["llm2mqtt_pc_reachable"]
    assert (ollama["name"], pc["name"]) == ("Ollama reachable", "Backend pc reachable")
    assert ollama["state_topic"] == "llm2mqtt/bridge/health"
    assert ollama["device_class"] == "connectivity"
    ollama_down = {"reachable": False, "last_error": "refused"}
    health = {"backends": {"ollama": ollama_down, "pc": {"reachable": True}}}
    assert render(ollama["value_template"], health) == "OFF"
    assert render(pc["value_template"], health) == "ON"
    assert render(pc["value_template"], {"backends": {}}) == "OFF"  # a backend the daemon no longer has
    assert json.loads(render(ollama["json_attributes_template"], health))["last_error"] == "refused"
