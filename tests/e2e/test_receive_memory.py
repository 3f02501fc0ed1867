"""mqtt.receive_memory: a flood of pictures many times the bound is held back in the connection
rather than in memory, and none is lost, at a broker that keeps what it cannot write yet
(Mosquitto with max_queued_messages 0; a default one drops past 1,000 unwritten packets, which
is why the bound is off by default)."""

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from io import BytesIO
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from PIL import Image

from tests.conftest import LOCK_RULE
from tests.e2e.test_metrics import scrape
from tests.support.mqtt_helpers import Collector, Daemon, Mosquitto, free_port, wait_for_port
from tests.support.ollama_standin import ChatRequest, OllamaStandin, default_reply

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(600)]

CAMERA = "cameras/front_door/snapshot"
RESULTS = "llm2mqtt/front_door_lock/result"
PICTURES = 1500  # past Mosquitto's default max_queued_messages (1000)
PAUSED = "reading from the broker pauses"


@pytest.fixture
def model(ollama: OllamaStandin) -> Iterator[threading.Event]:
    """The model answers only once the event is set (set at the end in any case)."""
    answer = threading.Event()

    def held(req: ChatRequest) -> str:
        answer.wait(300)
        return default_reply(req)

    ollama.responder = held
    yield answer
    answer.set()


def _pictures(count: int) -> list[bytes]:
    """Distinct JPEGs of random pixels (they do not compress), about 20 KB each."""
    out = []
    for _ in range(count):
        buffer = BytesIO()
        Image.frombytes("RGB", (120, 120), os.urandom(120 * 120 * 3)).save(buffer, "JPEG", quality=95)
        out.append(buffer.getvalue())
    return out


def _flood(port: int, payloads: list[bytes]) -> None:
    """Publish everything at once (QoS 1) and return once the broker has taken every one."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(65535)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for info in [client.publish(CAMERA, payload, qos=1) for payload in payloads]:
            info.wait_for_publish(120)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def _jobs(daemon: Daemon) -> dict[str, int]:
    with closing(sqlite3.connect(daemon.config.parent / "data" / "journal.sqlite3")) as db:
        return dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


def _wait(condition: Callable[[], bool], timeout: float, what: str, daemon: Daemon) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.2)):
        if condition():
            return
        event.wait(0.2)
    log = daemon.output().splitlines()
    raise AssertionError(f"not within {timeout}s: {what}; journal {_jobs(daemon)}; log ends {log[-20:]}")


def _settings() -> dict[str, Any]:
    return {
        "mqtt": {"receive_memory": "1MB"},
        "ollama": {"timeout": 600},  # the held model is slow, not broken
        "journal": {"dedupe_window": 3600},  # a redelivery after a restart is still known
    }


@pytest.fixture
def results(broker: Mosquitto) -> Iterator[Collector]:
    """The results only, on a client the default broker does not drop messages for: the test's
    everything-collector falls behind once 1,500 jobs finish in a minute (five messages each)."""
    client = Collector(broker.port, [RESULTS], receive_maximum=65535)
    yield client
    client.close()


def _answered_once(collector: Collector, count: int) -> None:
    collector.wait_for(RESULTS, count, timeout=300)
    job_ids = [m.json()["job_id"] for m in collector.on(RESULTS)]
    assert len(job_ids) == count
    assert len(set(job_ids)) == count


def test_a_flood_of_pictures_many_times_the_bound_is_all_journaled_then_answered_once(
    daemon: Callable[..., Daemon],
    collector: Collector,
    results: Collector,
    broker: Mosquitto,
    model: threading.Event,
) -> None:
    port = free_port()
    proc = daemon([LOCK_RULE], **_settings(), http={"enabled": True, "port": port})
    collector.wait_for("llm2mqtt/bridge/state")
    wait_for_port(port)
    assert scrape(port)[("llm2mqtt_receive_pauses_total", ())] == 0
    pictures = _pictures(PICTURES)
    assert sum(map(len, pictures)) > 20 * 1_000_000  # 20 times mqtt.receive_memory
    _flood(broker.port, pictures)
    _wait(lambda: sum(_jobs(proc).values()) >= PICTURES, 300, f"{PICTURES} jobs journaled", proc)
    states = _jobs(proc)
    assert sum(states.values()) == PICTURES, states
    assert "failed" not in states, states
    assert PAUSED in proc.output()  # the bound was reached: reading paused for the journal
    samples = scrape(port)
    assert samples[("llm2mqtt_receive_pauses_total", ())] >= 1
    assert samples[("llm2mqtt_receive_limit_bytes", ())] == 1_000_000
    model.set()
    _answered_once(results, PICTURES)
    assert _jobs(proc) == {"done": PICTURES}
    assert scrape(port)[("llm2mqtt_receive_held_bytes", ())] == 0  # every claim given back


def test_a_stop_while_the_intake_is_held_back_exits_cleanly_and_loses_nothing(
    daemon: Callable[..., Daemon],
    collector: Collector,
    results: Collector,
    broker: Mosquitto,
    model: threading.Event,
) -> None:
    proc = daemon([LOCK_RULE], **_settings())
    collector.wait_for("llm2mqtt/bridge/state")
    _flood(broker.port, _pictures(PICTURES))  # all in flight to the daemon now
    _wait(lambda: PAUSED in proc.output(), 120, "the intake held back", proc)
    assert proc.stop() == 0  # SIGTERM; the broker keeps what was not acknowledged
    again = daemon([LOCK_RULE], **_settings())  # same folder, same journal, same session
    _wait(lambda: sum(_jobs(again).values()) >= PICTURES, 300, f"{PICTURES} jobs journaled", again)
    model.set()
    _answered_once(results, PICTURES)
    assert _jobs(again) == {"done": PICTURES}
