"""Test helpers: a real Mosquitto on a free port, a collecting MQTT client, a daemon process."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


class Mosquitto:
    """A Mosquitto of the test's own, with persistence, that can be stopped and started again."""

    def __init__(self, workdir: Path, *, defaults: bool = False) -> None:
        """`defaults`: Mosquitto's own limits (max_queued_messages 1000, max_inflight_messages
        20) and no persistence, as a user's broker has them; else the tests' tuned broker."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        # Started as root, Mosquitto would drop to its own user and could not write here.
        head = f"user root\nlistener {self.port} 127.0.0.1\nallow_anonymous true\n"
        tuned = (
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 20\n"
            "set_tcp_nodelay true\n"
        )
        self.conf.write_text(head + ("" if defaults else tuned) + f"log_dest file {workdir}/mosquitto.log\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)  # a clean stop writes the persistence file
            self.proc.wait(10)
            self.proc = None


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    correlation_data: bytes | None = None

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """An MQTT client that records everything on its subscriptions (persistent session)."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        *,
        client_id: str | None = None,
        receive_maximum: int | None = None,
    ) -> None:
        """`receive_maximum`: let the broker send that many unacknowledged messages at once; a
        Mosquitto with its default limits otherwise drops what a slow subscriber leaves queued
        past 1,000 (as it would for any client)."""
        self.messages: list[Received] = []
        self._lock = threading.Condition()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"collector-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.topics = topics
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        if receive_maximum is not None:
            props.ReceiveMaximum = receive_maximum
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.subscribed = threading.Event()
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("collector did not connect")

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        for topic in self.topics:
            client.subscribe(topic, 1)
        self.subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        with self._lock:
            self.messages.append(
                Received(
                    message.topic,
                    bytes(message.payload),
                    bool(message.retain),
                    getattr(props, "CorrelationData", None),
                )
            )
            self._lock.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if paho.topic_matches_sub(topic, m.topic)]

    def wait_for(
        self,
        topic: str,
        count: int = 1,
        timeout: float = 15.0,
        where: Callable[[Received], bool] | None = None,
    ) -> list[Received]:
        """At least `count` messages on `topic` (matching `where`), or AssertionError."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [
                    m
                    for m in self.messages
                    if paho.topic_matches_sub(topic, m.topic) and (where is None or where(m))
                ]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({m.topic for m in self.messages})
                    raise AssertionError(
                        f"{len(found)}/{count} messages on {topic} within {timeout}s; topics seen: {seen}"
                    )
                self._lock.wait(min(left, 0.2))

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        props: Properties | None = None,
    ) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho closes its wake-up socket pair only in its finalizer; when the client ends up in
        # a reference cycle, the sockets may be collected first and warn. Finalize it now.
        self.client.__del__()


class Daemon:
    """`llm2mqtt run` as a real process, to stop, kill and start again."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "daemon.log"

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("LLM2MQTT_CONFIG", None)
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "-c", str(self.config)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.config.parent),
            )

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    daemon.start()
    try:
        yield daemon
    finally:
        if daemon.proc is not None:
            daemon.stop()
