"""Outage hold: while Ollama is away jobs wait, spend no attempts, and run when it returns;
bridge/health and the log say what is missing and where the daemon looked."""

import json
import time
from typing import Any

import pytest

from tests.support.mqtt_helpers import Collector, free_port
from tests.support.ollama_standin import OllamaStandin
from tests.support.samples import jpeg

pytestmark = pytest.mark.broker

HEALTH = "llm2mqtt/bridge/health"


def _backend(message: Any, name: str = "ollama") -> dict[str, Any]:
    return message.json()["backends"][name]


def _reachable(collector: Collector, value: bool, timeout: float = 15.0) -> dict[str, Any]:
    found = collector.wait_for(HEALTH, where=lambda m: _backend(m)["reachable"] is value, timeout=timeout)
    return _backend(found[-1])


def _failures(collector: Collector) -> list[Any]:
    failed = [m for m in collector.on("llm2mqtt/bridge/event") if m.json()["type"] == "job_failed"]
    return failed + collector.on("llm2mqtt/+/error")


def test_jobs_wait_through_an_outage_and_all_run_when_ollama_returns(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    daemon()  # the fixture's fast retries: without the hold, every job would be dead in a second
    _reachable(collector, True)
    ollama.stop()  # connection refused
    for i in range(50):
        collector.publish("llm2mqtt/message_topic/run", json.dumps({"id": f"note-{i}", "text": f"note {i}"}))
    down = _reachable(collector, False)
    assert "cannot reach Ollama at http://127.0.0.1:" in down["last_error"]
    assert down["since"]
    time.sleep(3)
    ollama.bad_gateway = True  # a proxy answers, Ollama behind it does not
    ollama.start()
    time.sleep(3)
    assert not ollama.requests
    ollama.bad_gateway = False
    back = time.monotonic()
    results = collector.wait_for("llm2mqtt/message_topic/result", 50, timeout=60)
    elapsed = time.monotonic() - back
    assert sorted(r.json()["id"] for r in results) == sorted(f"note-{i}" for i in range(50))
    assert elapsed < 60
    assert not _failures(collector)
    assert _reachable(collector, True)["last_error"]  # the last error stays visible for a while


def test_ollama_killed_mid_answer_costs_the_job_no_attempt(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    daemon(journal={"max_attempts": 1})  # a counted attempt would make the job dead at once
    _reachable(collector, True)
    ollama.hang_next(30)
    collector.publish("cameras/front_door/snapshot", jpeg(220))
    deadline = time.monotonic() + 10
    while not ollama.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    ollama.stop()  # the connection breaks mid-answer; nothing listens any more
    _reachable(collector, False)
    ollama.start()
    result = collector.wait_for("llm2mqtt/front_door_lock/result", timeout=30)[0].json()
    assert result["state"] == "locked"
    assert result["backend"] == "ollama"
    assert not _failures(collector)


def test_missing_ollama_and_broker_are_named_in_the_log(daemon, ollama: OllamaStandin) -> None:
    port = free_port()  # nothing listens there
    process = daemon(
        mqtt={"url": f"mqtt://someone:hunter2@127.0.0.1:{port}"},
        ollama={"url": "http://127.0.0.1:9"},
    )
    deadline = time.monotonic() + 20
    wanted = [
        f"cannot reach the broker at mqtt://someone@127.0.0.1:{port}",
        "cannot reach Ollama at http://127.0.0.1:9",
    ]
    while not all(w in process.output() for w in wanted) and time.monotonic() < deadline:
        time.sleep(0.1)
    output = process.output()
    assert all(w in output for w in wanted), output
    assert "hunter2" not in output
    assert output.count("cannot reach Ollama") == 1  # said once; then reminders every few minutes


def test_jobs_for_an_unreachable_ollama_wait_instead_of_failing(daemon, collector: Collector) -> None:
    daemon(ollama={"url": "http://127.0.0.1:9"}, journal={"max_attempts": 1})
    collector.wait_for("llm2mqtt/bridge/state")
    collector.publish("llm2mqtt/message_topic/run", "anything")
    down = _reachable(collector, False)
    assert "cannot reach Ollama at http://127.0.0.1:9" in down["last_error"]
    time.sleep(2)
    assert not _failures(collector)
    stats = collector.wait_for("llm2mqtt/bridge/stats", where=lambda m: m.json()["queue_depth"] == 1)
    assert stats[-1].json()["jobs_failed"] == 0
