"""The control plane: requests on llm2mqtt/bridge/request/<name>, against a real daemon and broker."""

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.conftest import LOCK_RULE, TOPIC_RULE
from tests.support.camera import Camera
from tests.support.mqtt_helpers import Collector, Daemon
from tests.support.ollama_standin import OllamaStandin
from tests.support.samples import jpeg


def request(collector: Collector, name: str, body: Any, transaction: int) -> dict[str, Any]:
    """Send a request and wait for the response that echoes its transaction."""
    payload = body if isinstance(body, str) else json.dumps({**body, "transaction": transaction})
    collector.publish(f"llm2mqtt/bridge/request/{name}", payload)
    found = collector.wait_for(
        f"llm2mqtt/bridge/response/{name}", where=lambda m: m.json().get("transaction") == transaction
    )
    response: dict[str, Any] = found[-1].json()
    return response


def online(collector: Collector) -> None:
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})


@pytest.mark.broker
def test_health_check_and_models_echo_the_transaction(
    daemon: Callable[..., Daemon], collector: Collector
) -> None:
    daemon([LOCK_RULE])
    online(collector)
    health = request(collector, "health_check", {}, 7)
    assert health["status"] == "ok"
    assert health["data"]["healthy"] is True
    assert health["data"]["ollama"]["reachable"] is True
    models = request(collector, "backend/models", {}, 8)
    assert "qwen2.5vl:3b" in models["data"]["models"]
    unknown = request(collector, "nonsense", {}, 9)
    assert unknown["status"] == "error"
    assert "unknown request 'nonsense'" in unknown["error"]


@pytest.mark.broker
def test_pause_skips_jobs_until_resumed_and_survives_a_restart(
    daemon: Callable[..., Daemon], collector: Collector, ollama: OllamaStandin
) -> None:
    process = daemon([LOCK_RULE])
    online(collector)
    paused = request(collector, "rule/pause", {"rule": "front_door_lock"}, 1)
    assert paused == {"data": {"rule": "front_door_lock", "paused": True}, "status": "ok", "transaction": 1}
    collector.publish("cameras/front_door/snapshot", jpeg(200))
    skipped = collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_skipped")
    assert skipped[0].json()["reason"] == "paused"
    assert not ollama.requests
    assert process.stop() == 0
    process.start()
    collector.wait_for("llm2mqtt/bridge/state", 2, where=lambda m: m.json() == {"state": "online"})
    collector.publish("cameras/front_door/snapshot", jpeg(210))
    collector.wait_for("llm2mqtt/bridge/event", 2, where=lambda m: m.json()["type"] == "job_skipped")
    assert not ollama.requests
    resumed = request(collector, "rule/resume", {"rule": "front_door_lock"}, 2)
    assert resumed["data"]["paused"] is False
    collector.publish("cameras/front_door/snapshot", jpeg(220))
    result = collector.wait_for("llm2mqtt/front_door_lock/result")[0].json()
    assert result["state"] == "locked"
    wrong = request(collector, "rule/pause", {"rule": "back_door"}, 3)
    assert wrong["status"] == "error"
    assert "unknown rule 'back_door'" in wrong["error"]


@pytest.mark.broker
def test_reload_applies_a_prompt_and_names_what_needs_a_restart(
    daemon: Callable[..., Daemon], collector: Collector, ollama: OllamaStandin
) -> None:
    process = daemon([LOCK_RULE])
    online(collector)
    rule_file = process.config.parent / "rules" / "front_door_lock.yaml"
    rule_file.write_text(yaml.safe_dump({**LOCK_RULE, "prompt": "Is the bolt thrown?"}))
    settings = yaml.safe_load(process.config.read_text())
    settings["ollama"]["parallel"] = 3
    process.config.write_text(yaml.safe_dump(settings))
    answer = request(collector, "reload", {}, 1)
    assert answer["status"] == "ok", answer
    assert answer["data"] == {
        "applied": ["rules.front_door_lock.prompt"],
        "restart_required": ["ollama.parallel"],
    }
    info = collector.wait_for("llm2mqtt/bridge/info", where=lambda m: bool(m.json()["restart_required"]))
    assert info[-1].json()["restart_required"] == ["ollama.parallel"]
    collector.publish("cameras/front_door/snapshot", jpeg(220))
    collector.wait_for("llm2mqtt/front_door_lock/result")
    assert "Is the bolt thrown?" in ollama.requests[-1].text
    # An invalid configuration changes nothing and names every problem.
    rule_file.write_text(yaml.safe_dump({**LOCK_RULE, "prompt": "Is it shut?", "colour": "red"}))
    settings["mqtt"]["url"] = "nope://"
    process.config.write_text(yaml.safe_dump(settings))
    refused = request(collector, "reload", {}, 2)
    assert refused["status"] == "error"
    assert "nothing was changed (2 problem(s))" in refused["error"]
    problems = "\n".join(refused["data"]["problems"])
    assert "colour" in problems
    assert "mqtt.url" in problems
    collector.publish("cameras/front_door/snapshot", jpeg(30))
    collector.wait_for("llm2mqtt/front_door_lock/result", 2)
    assert "Is the bolt thrown?" in ollama.requests[-1].text


@pytest.mark.broker
def test_pull_streams_progress_and_reports_failure(
    daemon: Callable[..., Daemon], collector: Collector, ollama: OllamaStandin
) -> None:
    ollama.registry = {"gemma3:4b"}
    ollama.latency = 1.6  # 0.4 s a progress line: some are sent (every 0.5 s), some not
    daemon([LOCK_RULE])
    online(collector)
    done = request(collector, "backend/pull", {"model": "gemma3:4b"}, 5)
    assert done == {"data": {"model": "gemma3:4b", "status": "success"}, "status": "ok", "transaction": 5}
    progress = [
        m.json() for m in collector.on("llm2mqtt/bridge/event") if m.json()["type"] == "pull_progress"
    ]
    assert progress[0]["status"] == "pulling manifest"
    assert any(0 < p.get("percent", 0) < 100 for p in progress)
    assert all(p["transaction"] == 5 for p in progress)
    assert ollama.has_model("gemma3:4b")
    failed = request(collector, "backend/pull", {"model": "nosuch:1b"}, 6)
    assert failed["status"] == "error"
    assert "file does not exist" in failed["error"]
    assert request(collector, "backend/pull", {}, 7)["status"] == "error"


@pytest.mark.broker
def test_info_carries_the_effective_config_without_secrets(
    daemon: Callable[..., Daemon], collector: Collector, ollama: OllamaStandin
) -> None:
    daemon(
        [LOCK_RULE],
        http={"token": "s3cret-token-0123456"},
        ollama={"url": f"http://bob:hunter2@127.0.0.1:{ollama.port}"},
    )
    info = collector.wait_for("llm2mqtt/bridge/info")[0]
    text = info.payload.decode()
    assert "s3cret-token-0123456" not in text
    assert "hunter2" not in text
    config = info.json()["config"]
    assert config["http"]["token"] == "**********"
    assert config["ollama"]["url"] == f"http://**********@127.0.0.1:{ollama.port}"
    assert config["rules"][0]["name"] == "front_door_lock"
    assert config["journal"]["max_attempts"] == 3  # defaults are shown: it is the effective config
    assert info.json()["restart_required"] == []


@pytest.mark.broker
def test_rule_check_takes_a_snapshot_now(daemon: Callable[..., Daemon], collector: Collector) -> None:
    camera = Camera(jpeg(220))
    try:
        snapshot_rule = {**LOCK_RULE, "snapshot": {"url": camera.url}}
        daemon([snapshot_rule, TOPIC_RULE])
        online(collector)
        answer = request(collector, "rule/check", {"rule": "front_door_lock"}, 1)
        assert answer["data"] == {"rule": "front_door_lock", "requested": True}
        result = collector.wait_for("llm2mqtt/front_door_lock/result")[0].json()
        assert result["state"] == "locked"
        assert camera.hits == 1
        refused = request(collector, "rule/check", {"rule": "message_topic"}, 2)
        assert refused["status"] == "error"
        assert "has no snapshot source" in refused["error"]
    finally:
        camera.close()


@pytest.mark.broker
def test_pausing_a_scheduled_rule_pauses_its_schedule_too(
    daemon: Callable[..., Daemon], collector: Collector
) -> None:
    camera = Camera(jpeg(220))
    try:
        scheduled = {**LOCK_RULE, "snapshot": {"url": camera.url}, "schedule": {"every": "1s"}}
        daemon([scheduled])
        online(collector)
        switch = "llm2mqtt/front_door_lock/paused"
        collector.wait_for("llm2mqtt/front_door_lock/result")  # the schedule runs
        request(collector, "rule/pause", {"rule": "front_door_lock"}, 1)
        collector.wait_for(switch, where=lambda m: m.payload == b"ON")  # Home Assistant's switch
        time.sleep(1.5)  # a tick already under way ends
        hits = camera.hits
        time.sleep(3)
        assert camera.hits == hits  # no snapshots taken only to be skipped
        request(collector, "rule/resume", {"rule": "front_door_lock"}, 2)
        collector.wait_for(switch, where=lambda m: m.payload == b"OFF")
        deadline = time.monotonic() + 10
        while camera.hits == hits:
            assert time.monotonic() < deadline, "the schedule did not resume"
            time.sleep(0.1)
    finally:
        camera.close()


@pytest.mark.broker
def test_health_check_asks_every_backend(
    daemon: Callable[..., Daemon], collector: Collector, ollama: OllamaStandin
) -> None:
    with OllamaStandin() as second:
        backend = {"type": "ollama", "parallel": 1, "retries": 0, "connect_timeout": 1}
        daemon(
            [TOPIC_RULE],
            ollama=None,
            backends={"mini": {**backend, "url": ollama.url}, "pc": {**backend, "url": second.url}},
        )
        online(collector)
        both = request(collector, "health_check", {}, 1)["data"]
        assert both["healthy"] is True
        assert {name: b["reachable"] for name, b in both["backends"].items()} == {"mini": True, "pc": True}
        assert both["ollama"]["url"] == ollama.url  # the first Ollama backend, as before
        ollama.stop()  # the first backend leaves: the other still serves, so the bridge is healthy
        one = request(collector, "health_check", {}, 2)["data"]
        assert one["healthy"] is True
        assert one["backends"]["mini"]["reachable"] is False
        assert "error" in one["backends"]["mini"]
        assert one["backends"]["pc"] == {"type": "ollama", "url": second.url, "reachable": True, "loaded": []}
        second.stop()
        none = request(collector, "health_check", {}, 3)["data"]
        assert none["healthy"] is False
        assert not any(b["reachable"] for b in none["backends"].values())
