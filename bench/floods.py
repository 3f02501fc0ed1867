"""Floods and faults: nothing lost, nothing answered twice.

- `burst`: N QoS 1 jobs published as fast as one client can, at a Mosquitto with its default
  settings (max_queued_messages 1000, max_inflight_messages 20); every job must be journaled
  and answered exactly once per job id. `--compare` runs it again with `mqtt.receive_maximum`
  20, which is how the daemon connected before: the broker's queue limit then drops jobs.
- `durability`: kill -9 of the daemon five times while 1,000 jobs arrive, then two broker
  restarts while 500 arrive; counts lost and repeated answers.
"""

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bench.common import TEXT_RULE, stack
from tests.support.mqtt_helpers import Collector, Daemon

RESULTS = "llm2mqtt/bench_text/result"


def _publisher(port: int) -> paho.Client:
    """One client that publishes as fast as it can (paho keeps QoS 1 messages until PUBACK)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(65535)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _answers(collector: Collector) -> dict[str, list[str]]:
    """Job ids answered per input id."""
    found: dict[str, list[str]] = {}
    for message in collector.on(RESULTS):
        body = message.json()
        found.setdefault(body["id"], []).append(body["job_id"])
    return found


def _wait_for_answers(collector: Collector, count: int, timeout: float, settle: float = 5.0) -> None:
    """Until `count` answers came, or no new answer for `settle` seconds, or `timeout`."""
    deadline = time.monotonic() + timeout
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        seen = len(collector.on(RESULTS))
        if seen >= count:
            time.sleep(1.0)  # let any repeat arrive, so repeats are counted too
            return
        if seen != last:
            last, quiet_since = seen, time.monotonic()
        elif time.monotonic() - quiet_since > settle:
            return
        time.sleep(0.5)


def _journaled(daemon: Daemon) -> dict[str, int]:
    with closing(sqlite3.connect(daemon.config.parent / "data" / "journal.sqlite3")) as db:
        return dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


def _tally(ids: list[str], answers: dict[str, list[str]]) -> dict[str, int]:
    """Lost inputs, repeated answers of one job, and inputs that became two jobs."""
    return {
        "answered": sum(1 for i in ids if i in answers),
        "lost": sum(1 for i in ids if i not in answers),
        "repeats_same_job": sum(len(a) - len(set(a)) for a in answers.values()),
        "answered_by_two_jobs": sum(1 for a in answers.values() if len(set(a)) > 1),
    }


def burst(jobs: int = 10_000, receive_maximum: int | None = None) -> dict[str, Any]:
    """`jobs` at once at a default-configured Mosquitto; each answered exactly once?"""
    mqtt = {} if receive_maximum is None else {"receive_maximum": receive_maximum}
    with stack([TEXT_RULE], default_broker=True, mqtt=mqtt) as (broker, _standin, daemon):
        collector = Collector(broker.port, [RESULTS, "llm2mqtt/bridge/state"])
        collector.wait_for("llm2mqtt/bridge/state", timeout=30)
        publisher = _publisher(broker.port)
        ids = [f"b{i}" for i in range(jobs)]
        started = time.perf_counter()
        infos = [
            publisher.publish("bench/in", json.dumps({"id": i, "text": f"buy item {i}"}), qos=1) for i in ids
        ]
        for info in infos:
            info.wait_for_publish(120)
        published = time.perf_counter() - started
        _wait_for_answers(collector, jobs, timeout=600)
        elapsed = time.perf_counter() - started
        answers = _answers(collector)
        journaled = _journaled(daemon)
        publisher.disconnect()
        publisher.loop_stop()
        collector.close()
    return {
        "broker": "mosquitto, default limits",
        "receive_maximum": receive_maximum or 65535,
        "jobs": jobs,
        "publish_s": round(published, 1),
        "all_answered_s": round(elapsed, 1),
        "journaled": sum(journaled.values()),
        "journal_states": journaled,
        **_tally(ids, answers),
    }


def _during_publishing(
    client: Collector,
    ids: list[str],
    seconds: float,
    faults: list[Callable[[], None]],
    pause: Callable[[], float],
) -> None:
    """Publish `ids` evenly over `seconds` while the faults happen one after another."""

    def publish() -> None:
        for ident in ids:
            client.client.publish("bench/in", json.dumps({"id": ident, "text": f"note {ident}"}), qos=1)
            time.sleep(seconds / len(ids))

    sender = threading.Thread(target=publish, daemon=True)
    sender.start()
    for fault in faults:
        time.sleep(pause())
        fault()
    sender.join(120)


def durability(
    jobs: int = 1000, kills: int = 5, restarts_jobs: int = 500, restarts: int = 2
) -> dict[str, Any]:
    """kill -9 of the daemon during `jobs`; broker restarts during `restarts_jobs`."""
    rng = random.Random(7)
    out: dict[str, Any] = {}
    journal = {"dedupe_window": 0, "retry_delay": 0.5}
    with stack([TEXT_RULE], latency=0.005, journal=journal) as (broker, _standin, daemon):
        collector = Collector(broker.port, [RESULTS, "llm2mqtt/bridge/state"], client_id="floods-collector")
        sender = Collector(broker.port, [], client_id="floods-sender")
        # Until the daemon first connects, the broker has no session to keep its inputs in.
        collector.wait_for("llm2mqtt/bridge/state", timeout=60, where=lambda m: m.json()["state"] == "online")

        def kill_9() -> None:
            daemon.kill()
            time.sleep(rng.uniform(0.2, 1.0))
            daemon.start()

        def restart_broker() -> None:
            broker.stop()
            time.sleep(1.0)
            broker.start()

        ids = [f"k{i}" for i in range(jobs)]
        _during_publishing(sender, ids, 20.0, [kill_9] * kills, lambda: rng.uniform(1.5, 3.5))
        _wait_for_answers(collector, jobs, timeout=300, settle=20)
        out["kill_9"] = {"jobs": jobs, "kills": kills, **_tally(ids, _answers(collector))}

        ids = [f"r{i}" for i in range(restarts_jobs)]
        _during_publishing(sender, ids, 10.0, [restart_broker] * restarts, lambda: rng.uniform(2.0, 3.5))
        _wait_for_answers(collector, jobs + restarts_jobs, timeout=300, settle=20)
        answers = {k: v for k, v in _answers(collector).items() if k.startswith("r")}
        out["broker_restarts"] = {"jobs": restarts_jobs, "restarts": restarts, **_tally(ids, answers)}
        sender.close()
        collector.close()
    return out
