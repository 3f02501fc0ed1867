"""Nothing is lost and nothing runs twice: stops, crashes and broker outages."""

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.mqtt_helpers import Collector, Mosquitto
from tests.support.ollama_standin import OllamaStandin

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _send(collector: Collector, count: int, prefix: str = "n") -> list[str]:
    ids = [f"{prefix}{i}" for i in range(count)]
    for ident in ids:
        collector.publish(
            "llm2mqtt/message_topic/run", json.dumps({"id": ident, "text": f"shopping list {ident}"})
        )
    return ids


def _result_ids(collector: Collector) -> list[str]:
    return [m.json()["id"] for m in collector.on("llm2mqtt/message_topic/result")]


def _journal_states(config: Path) -> dict[str, int]:
    with closing(sqlite3.connect(config.parent / "data" / "journal.sqlite3")) as db:
        return dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


def test_stop_leaves_jobs_queued_and_restart_finishes_each_once(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    ollama.latency = 0.3
    first = daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    ids = _send(collector, 10)
    collector.wait_for("llm2mqtt/message_topic/result", 2)
    assert first.stop() == 0
    offline = collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "offline"})
    assert offline
    states = _journal_states(first.config)
    assert states.get("queued", 0) >= 1, states  # left waiting, not dropped and not run in a hurry
    assert states.get("running", 0) == 0, states

    ollama.latency = 0.0
    daemon()
    collector.wait_for("llm2mqtt/message_topic/result", 10, timeout=30)
    time.sleep(0.5)
    assert sorted(_result_ids(collector)) == sorted(ids)  # every job, none twice
    assert len(ollama.requests) == 10
    assert "resuming" in first.output()


def test_broker_restart_mid_stream_loses_nothing(
    daemon, collector: Collector, broker: Mosquitto, ollama: OllamaStandin
) -> None:
    ollama.latency = 0.1
    daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    ids = _send(collector, 20)
    collector.wait_for("llm2mqtt/message_topic/result", 3)
    broker.stop()
    time.sleep(1.0)  # the daemon keeps working; its results wait
    broker.start()
    collector.wait_for("llm2mqtt/message_topic/result", 20, timeout=40)
    time.sleep(0.5)
    results = _result_ids(collector)
    assert set(results) == set(ids)
    assert len(ollama.requests) == 20  # the outage made no job run twice


def test_kill_9_mid_job_redoes_it_once(daemon, collector: Collector, ollama: OllamaStandin) -> None:
    ollama.latency = 3.0
    first = daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    _send(collector, 1, prefix="k")
    started = collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_started")
    job_id = started[0].json()["job_id"]
    deadline = time.monotonic() + 10
    while not ollama.requests and time.monotonic() < deadline:
        time.sleep(0.02)  # killed while the model is answering, not before it was asked
    assert ollama.in_flight == 1
    first.kill()
    # The broker publishes the last will for the dead daemon.
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "offline"})
    assert not collector.on("llm2mqtt/message_topic/result")

    ollama.latency = 0.0
    daemon()
    result = collector.wait_for("llm2mqtt/message_topic/result")[0].json()
    time.sleep(1.0)
    assert result["job_id"] == job_id  # the same job, redone
    assert len(collector.on("llm2mqtt/message_topic/result")) == 1
    assert len(ollama.requests) == 2


def test_input_sent_while_daemon_is_down_is_delivered_later(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    first = daemon()
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    first.stop()
    ids = _send(collector, 3, prefix="late")  # the broker keeps them for the daemon's session
    daemon()
    collector.wait_for("llm2mqtt/message_topic/result", 3)
    assert sorted(_result_ids(collector)) == sorted(ids)


def test_duplicate_id_and_repeated_payload_run_once(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    body = json.dumps({"id": "same", "text": "buy eggs"})
    collector.publish("llm2mqtt/message_topic/run", body)
    collector.publish("llm2mqtt/message_topic/run", json.dumps({"id": "same", "text": "buy eggs again"}))
    collector.publish("home/messages/in", "the window is broken")
    collector.publish("home/messages/in", "the window is broken")
    skipped = collector.wait_for(
        "llm2mqtt/bridge/event", 2, where=lambda m: m.json()["type"] == "job_skipped"
    )
    assert {s.json()["reason"] for s in skipped} == {"duplicate"}
    collector.wait_for("llm2mqtt/message_topic/result", 2)
    time.sleep(0.5)
    assert len(collector.on("llm2mqtt/message_topic/result")) == 2
    assert len(ollama.requests) == 2


def test_stop_past_grace_requeues_the_running_job_without_counting_it(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    ollama.latency = 30.0
    first = daemon(shutdown_grace=0.5)
    collector.wait_for("llm2mqtt/bridge/state")
    _send(collector, 1, prefix="g")
    collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_started")
    started = time.monotonic()
    assert first.stop() == 0
    assert time.monotonic() - started < 10  # did not wait for the model's 30 s
    with closing(sqlite3.connect(first.config.parent / "data" / "journal.sqlite3")) as db:
        state, attempts = db.execute("SELECT state, attempts FROM jobs").fetchone()
    assert (state, attempts) == ("queued", 0)
    ollama.latency = 0.0
    daemon()
    assert collector.wait_for("llm2mqtt/message_topic/result")[0].json()["id"] == "g0"


def test_retained_input_is_not_judged_again_after_restart(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    from tests.support.samples import jpeg

    collector.publish("cameras/front_door/snapshot", jpeg(200), retain=True)
    first = daemon()
    collector.wait_for("llm2mqtt/front_door_lock/result")
    first.stop()
    daemon()
    collector.wait_for("llm2mqtt/bridge/event", where=lambda m: m.json()["type"] == "job_skipped")
    time.sleep(0.5)
    assert len(ollama.requests) == 1


def test_a_second_daemon_on_the_same_data_directory_refuses_to_start(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    """The README's foreground command while the launchd agent runs: two daemons on one journal
    would both resume its jobs and take each other's broker session in turn."""
    first = daemon()
    collector.wait_for("llm2mqtt/bridge/state")
    second = daemon()
    assert second.proc is not None
    assert second.proc.wait(20) == 1
    second.proc = None
    assert first.proc is not None
    said = f"error: another llm2mqtt (pid {first.proc.pid}) is running with the data directory"
    assert said in second.output()  # (both write to the one log file here)
    _send(collector, 1, prefix="one")  # the first runs on, alone
    collector.wait_for("llm2mqtt/message_topic/result")
    assert first.stop() == 0
    third = daemon()  # the lock went with the first: a new daemon starts
    collector.wait_for("llm2mqtt/bridge/state", 2, where=lambda m: m.json() == {"state": "online"})
    assert third.proc is not None
    assert third.proc.poll() is None
    assert third.stop() == 0
