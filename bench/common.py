"""Shared pieces of the benchmarks: a broker, the stand-in, a daemon process, a fast client."""

import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psutil
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bridge.pipeline.paho_socket import no_delay, quick_ack
from tests.support.mqtt_helpers import Daemon, Mosquitto
from tests.support.ollama_standin import OllamaStandin

TEXT_RULE: dict[str, Any] = {
    "name": "bench_text",
    "handler": "classify",
    "model": "qwen2.5:3b",
    "prompt": "Which area?",
    "labels": ["shopping", "chores", "security", "other"],
    "inputs": [{"mqtt": "bench/in"}],
    "outputs": {"retain": False},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


class Client:
    """A bench MQTT client that timestamps every message as it arrives."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.arrivals: dict[str, list[tuple[float, bytes]]] = {}
        self._lock = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.on_message = self._on_message
        self.client.on_socket_open = no_delay
        # Acknowledging at once, as the daemon does: a default Mosquitto (no TCP_NODELAY) holds
        # the result to us behind its PUBACK of our job until our delayed ACK (up to 40 ms)
        # comes; that wait is the measuring client's, the same for every bridge measured.
        self.client.on_publish = lambda c, *a: quick_ack(c)
        ready = threading.Event()
        self.client.on_connect = lambda c, u, f, r, p: ([c.subscribe(t, 1) for t in topics], ready.set())
        self.client.on_subscribe = lambda *a: None
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        ready.wait(10)
        time.sleep(0.2)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        quick_ack(client)
        with self._lock:
            self.arrivals.setdefault(message.topic, []).append((now, bytes(message.payload)))
            self._lock.notify_all()

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.arrivals.get(topic, []))

    def wait(self, topic: str, count: int, timeout: float) -> list[tuple[float, bytes]]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.arrivals.get(topic, [])) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.arrivals.get(topic, []))}/{count} on {topic}")
                self._lock.wait(min(left, 0.5))
            return list(self.arrivals[topic])

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def stack(
    rules: list[dict[str, Any]],
    *,
    parallel: int = 1,
    latency: float = 0.0,
    default_broker: bool = False,
    mqtt: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[tuple[Mosquitto, OllamaStandin, Daemon]]:
    """A broker, the stand-in and a daemon, all fresh, in a temporary folder.

    `default_broker`: Mosquitto with its own default limits; `mqtt`: more keys for `mqtt:`."""
    with tempfile.TemporaryDirectory(prefix="llm2mqtt-bench-") as tmp:
        folder = Path(tmp)
        broker = Mosquitto(folder / "mosquitto", defaults=default_broker)
        broker.start()
        standin = OllamaStandin(parallel=parallel, latency=latency, max_queue=100_000).start()
        (folder / "rules").mkdir()
        for rule in rules:
            (folder / "rules" / f"{rule['name']}.yaml").write_text(yaml.safe_dump(rule))
        config: dict[str, Any] = {
            "mqtt": {"url": broker.url, "client_id": "llm2mqtt-bench", **(mqtt or {})},
            "ollama": {"url": standin.url, "parallel": parallel, "timeout": 600},
            "journal": {"dedupe_window": 0},
            "log_level": "warning",
            **settings,
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        daemon = Daemon(folder / "config.yaml")
        daemon.start()
        try:
            yield broker, standin, daemon
        finally:
            if daemon.proc is not None:
                daemon.stop(60)
            standin.stop()
            broker.stop()


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


def wait_online(client: Client, timeout: float = 20) -> None:
    client.wait("llm2mqtt/bridge/state", 1, timeout)


def env_note() -> str:
    return f"cpus={os.cpu_count()} python={'.'.join(map(str, __import__('sys').version_info[:3]))}"
