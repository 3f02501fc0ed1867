"""Two daemons, one broker, one shared group: each job runs on exactly one of them."""

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TOPIC_RULE
from tests.support.aws_helpers import moto_server
from tests.support.mqtt_helpers import Collector, Daemon, Mosquitto
from tests.support.ollama_standin import OllamaStandin

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]

JOBS = 1000


def _daemon(folder: Path, broker: Mosquitto, ollama: OllamaStandin, name: str, **extra: Any) -> Daemon:
    (folder / "rules").mkdir(parents=True)
    (folder / "rules" / "message_topic.yaml").write_text(
        yaml.safe_dump({**TOPIC_RULE, "outputs": {"retain": False}})
    )
    settings = {
        "mqtt": {
            "url": broker.url,
            "client_id": f"llm2mqtt-{name}",
            "reconnect_max": 1,
            "shared_group": "bridges",
        },
        "ollama": {"url": ollama.url, "parallel": 2},
        "journal": {"dedupe_window": 0},
        "shutdown_grace": 5,
        "log_level": "warning",
        **extra,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    process = Daemon(folder / "config.yaml")
    process.start()
    return process


def _ran(process: Daemon) -> set[str]:
    """The input ids of the jobs this daemon finished, from its own journal."""
    with closing(sqlite3.connect(process.config.parent / "data" / "journal.sqlite3")) as db:
        rows = db.execute("SELECT input FROM jobs WHERE state = 'done'").fetchall()
    return {json.loads(row[0])["id"] for row in rows}


def _state_recovers(collector: Collector) -> None:
    """The killed daemon's last will says offline on the shared bridge/state; the live one
    answers it with online, so Home Assistant's entities stay available."""
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json()["state"] == "offline")
    states = collector.on("llm2mqtt/bridge/state")
    last_offline = max(i for i, m in enumerate(states) if m.json()["state"] == "offline")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        later = collector.on("llm2mqtt/bridge/state")[last_offline + 1 :]
        if any(m.json()["state"] == "online" for m in later):
            return
        time.sleep(0.05)
    raise AssertionError("bridge/state stayed offline while one daemon of the group was alive")


def _run(tmp_path: Path, broker: Mosquitto, ollama: OllamaStandin, *, kill_halfway: bool) -> None:
    collector = Collector(broker.port, ["llm2mqtt/message_topic/result", "llm2mqtt/bridge/state"])
    first = _daemon(tmp_path / "a", broker, ollama, "a")
    # Discovery and the other retained bridge messages have one writer: the daemon with
    # homeassistant enabled. The second one leaves it off.
    second = _daemon(tmp_path / "b", broker, ollama, "b", homeassistant={"enabled": False})
    try:
        collector.wait_for("llm2mqtt/bridge/state")
        time.sleep(2)  # both subscribed
        for i in range(JOBS):
            collector.publish("llm2mqtt/message_topic/run", json.dumps({"id": f"s{i}", "text": f"note {i}"}))
            if kill_halfway and i == JOBS // 2:
                second.kill()  # kill -9, mid-stream
                _state_recovers(collector)
                second.start()
        wanted = {f"s{i}" for i in range(JOBS)}
        deadline = time.monotonic() + 120
        answered: set[str] = set()
        while answered != wanted and time.monotonic() < deadline:
            time.sleep(0.2)
            # A result whose delivery a kill -9 cut short is sent again: at least once per job id.
            answered = {m.json()["id"] for m in collector.on("llm2mqtt/message_topic/result")}
        assert answered == wanted
        first.stop()
        second.stop()
        on_a, on_b = _ran(first), _ran(second)
        assert on_a | on_b == answered
        assert not on_a & on_b  # each job ran on exactly one daemon
        assert len(on_a) > JOBS // 10
        assert len(on_b) > JOBS // 10
    finally:
        for process in (first, second):
            if process.proc is not None:
                process.kill()
        collector.close()


def test_two_daemons_split_the_work(tmp_path: Path, broker: Mosquitto, ollama: OllamaStandin) -> None:
    _run(tmp_path, broker, ollama, kill_halfway=False)


def test_a_daemon_killed_halfway_loses_no_job(
    tmp_path: Path, broker: Mosquitto, ollama: OllamaStandin
) -> None:
    _run(tmp_path, broker, ollama, kill_halfway=True)


@pytest.mark.aws
def test_sqs_and_the_shared_group_together(tmp_path: Path, broker: Mosquitto, ollama: OllamaStandin) -> None:
    """Two daemons read one SQS queue and share the MQTT inputs: every job once, both work."""
    count = 100
    with moto_server() as moto:
        queue, _ = moto.queue(visibility=10)
        aws = {
            "aws": {
                "endpoint_url": moto.url,
                "region": "us-east-1",
                "queue_url": queue,
                "wait_time": 1,
                "visibility_timeout": 10,
                "heartbeat": 2,
            }
        }
        collector = Collector(broker.port, ["llm2mqtt/message_topic/result", "llm2mqtt/bridge/state"])
        first = _daemon(tmp_path / "a", broker, ollama, "a", **aws)
        second = _daemon(tmp_path / "b", broker, ollama, "b", homeassistant={"enabled": False}, **aws)
        try:
            collector.wait_for("llm2mqtt/bridge/state")
            time.sleep(2)
            for i in range(count):
                moto.send(queue, {"rule": "message_topic", "id": f"q{i}", "text": f"sqs note {i}"})
                collector.publish(
                    "llm2mqtt/message_topic/run", json.dumps({"id": f"m{i}", "text": f"note {i}"})
                )
            wanted = {f"q{i}" for i in range(count)} | {f"m{i}" for i in range(count)}
            deadline = time.monotonic() + 90
            answered: set[str] = set()
            while answered != wanted and time.monotonic() < deadline:
                time.sleep(0.2)
                answered = {m.json()["id"] for m in collector.on("llm2mqtt/message_topic/result")}
            assert answered == wanted
            moto.wait_held(queue, 0, timeout=30)  # every SQS message deleted once answered
            first.stop()
            second.stop()
            on_a, on_b = _ran(first), _ran(second)
            assert not on_a & on_b
            assert on_a | on_b == wanted
            assert any(i.startswith("q") for i in on_a)
            assert any(i.startswith("q") for i in on_b)
        finally:
            for process in (first, second):
                if process.proc is not None:
                    process.kill()
            collector.close()
