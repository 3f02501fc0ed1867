"""Several backends behind one daemon: fallback without lost jobs or spent attempts, privacy."""

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LOCK_RULE, TOPIC_RULE
from tests.support.mqtt_helpers import Collector
from tests.support.ollama_standin import OllamaStandin
from tests.support.openai_standin import OpenAIStandin
from tests.support.samples import jpeg

pytestmark = pytest.mark.broker


@pytest.fixture
def second() -> Iterator[OllamaStandin]:
    with OllamaStandin() as standin:
        yield standin


@pytest.fixture
def cloud() -> Iterator[OpenAIStandin]:
    with OpenAIStandin(models=["qwen2.5:3b", "qwen2.5vl:3b"]) as standin:
        yield standin


def _failures(collector: Collector) -> list[Any]:
    failed = [m for m in collector.on("llm2mqtt/bridge/event") if m.json()["type"] == "job_failed"]
    return failed + collector.on("llm2mqtt/+/error")


def _ollama(standin: OllamaStandin) -> dict[str, Any]:
    return {"type": "ollama", "url": standin.url, "parallel": 1, "retries": 0, "connect_timeout": 1}


def test_jobs_of_a_backend_killed_mid_run_finish_on_the_next(
    daemon, collector: Collector, ollama: OllamaStandin, second: OllamaStandin
) -> None:
    for standin in (ollama, second):
        standin.latency = 0.2
    daemon(
        [TOPIC_RULE],
        ollama=None,
        backends={"mini": _ollama(ollama), "pc": _ollama(second)},
        journal={"max_attempts": 1},  # a spent attempt would make a job dead at once
    )
    collector.wait_for("llm2mqtt/bridge/health", where=lambda m: m.json()["backends"]["pc"]["reachable"])
    for i in range(20):
        collector.publish("llm2mqtt/message_topic/run", json.dumps({"id": f"j{i}", "text": f"note {i}"}))
    collector.wait_for("llm2mqtt/message_topic/result", 4)
    ollama.stop()  # mini dies with a job in flight
    results = [m.json() for m in collector.wait_for("llm2mqtt/message_topic/result", 20, timeout=40)]
    assert sorted(r["id"] for r in results) == sorted(f"j{i}" for i in range(20))
    by_backend = {name: sum(r["backend"] == name for r in results) for name in ("mini", "pc")}
    assert by_backend["mini"] >= 1
    assert by_backend["pc"] >= 10
    assert not _failures(collector)
    health = collector.on("llm2mqtt/bridge/health")[-1].json()["backends"]
    assert health["mini"]["reachable"] is False
    assert health["pc"]["reachable"] is True
    assert ollama.peak_concurrency <= 1
    assert second.peak_concurrency <= 1


def test_private_rules_never_reach_the_remote_backend(
    daemon, collector: Collector, ollama: OllamaStandin, cloud: OpenAIStandin
) -> None:
    remote = {"type": "openai", "base_url": cloud.url, "api_key": "sk-standin", "retries": 0}
    daemon(
        [{**LOCK_RULE, "backend": ["mini", "cloud"]}, {**TOPIC_RULE, "backend": ["mini", "cloud"]}],
        ollama=None,
        backends={"mini": _ollama(ollama), "cloud": remote},
    )
    collector.wait_for("llm2mqtt/bridge/health", where=lambda m: m.json()["backends"]["mini"]["reachable"])
    ollama.stop()  # every local backend is down
    collector.wait_for(
        "llm2mqtt/bridge/health", where=lambda m: not m.json()["backends"]["mini"]["reachable"]
    )
    for brightness in (230, 20):
        collector.publish("cameras/front_door/snapshot", jpeg(brightness))
    collector.publish("llm2mqtt/message_topic/run", "buy milk for shopping")
    text = collector.wait_for("llm2mqtt/message_topic/result")[0].json()
    assert text["backend"] == "cloud"  # text may leave the house
    time.sleep(2)
    assert not collector.on("llm2mqtt/front_door_lock/result")  # the pictures wait at home
    assert all(not seen.images for seen in cloud.requests)
    assert collector.on("llm2mqtt/bridge/health")[-1].json()["held"] == 2
    ollama.start()
    results = [m.json() for m in collector.wait_for("llm2mqtt/front_door_lock/result", 2, timeout=45)]
    assert {r["backend"] for r in results} == {"mini"}
    assert sorted(r["state"] for r in results) == ["locked", "unlocked"]
    assert all(not seen.images for seen in cloud.requests)
    assert not _failures(collector)
