"""Hostile inputs over a real broker to a real daemon: each is its own error, the next job runs."""

import time

import pytest

from tests.support.hostile import CORPUS, TEXT_RUN, deep_json
from tests.support.mqtt_helpers import Collector
from tests.support.ollama_standin import OllamaStandin

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]  # many jobs, each waited for


def _normal_job(collector: Collector, tag: str) -> dict:
    """A normal job after the hostile one: it must get its result."""
    before = len(collector.on("llm2mqtt/message_topic/result"))
    collector.publish(TEXT_RUN, f'{{"id": "{tag}", "text": "buy milk {tag}"}}')
    results = collector.wait_for("llm2mqtt/message_topic/result", before + 1, timeout=30)
    return results[-1].json()


def test_every_hostile_input_is_its_own_error_and_the_next_job_runs(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    proc = daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    for number, (name, topic, payload, expected) in enumerate(CORPUS):
        rule = "front_door_lock" if topic.startswith("cameras/") else "message_topic"
        before = len(collector.on(f"llm2mqtt/{rule}/error"))
        collector.publish(topic, payload)
        errors = collector.wait_for(f"llm2mqtt/{rule}/error", before + 1, timeout=30)
        error = errors[-1].json()
        assert expected in error["error"], (name, error["error"])
        assert error["job_id"]
        assert _normal_job(collector, f"after-{number}")["id"] == f"after-{number}", name
    # Nothing hostile reached the model, and the camera rule never answered without a picture.
    assert len(ollama.requests) == len(CORPUS)
    assert not collector.on("llm2mqtt/front_door_lock/state")
    assert not collector.on("llm2mqtt/front_door_lock/result")
    assert "Traceback" not in proc.output()


def test_deep_json_a_hundred_times_then_a_restart_then_a_normal_job(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    first = daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    payload = deep_json()
    for _ in range(100):
        collector.publish(TEXT_RUN, payload)
    errors = collector.wait_for("llm2mqtt/message_topic/error", 100, timeout=60)
    assert all("nested deeper" in e.json()["error"] for e in errors)
    assert len({e.json()["job_id"] for e in errors}) == 100
    assert first.stop() == 0
    daemon()
    collector.wait_for("llm2mqtt/bridge/state", 2, where=lambda m: m.json() == {"state": "online"})
    assert _normal_job(collector, "after-restart")["id"] == "after-restart"
    time.sleep(0.5)
    # Every one was acknowledged: the broker delivered none of them again after the restart.
    assert len(collector.on("llm2mqtt/message_topic/error")) == 100
    assert len(ollama.requests) == 1
