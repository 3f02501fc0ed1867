"""The broker link on the daemon's asyncio loop, in-process against a real Mosquitto: no network
thread of paho's, callbacks on the loop thread, reconnects of its own, the receive bound pausing
the socket's reader, TLS."""

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config.settings import MqttSettings
from bridge.pipeline.mqtt import Inbound, MqttLink
from bridge.pipeline.paho_socket import cork
from bridge.pipeline.topics import Topics
from tests.e2e.test_mqtt_security import secure_broker
from tests.support.mqtt_helpers import Collector, Mosquitto

pytestmark = pytest.mark.broker

__all__ = ["secure_broker"]  # a fixture, used by name

PAHO_THREAD = "paho-mqtt-client-"  # how paho names the thread of loop_start


class Harness:
    """A link on a running loop, and what it reported, with the thread each report came on."""

    def __init__(self, settings: MqttSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.messages: list[Inbound] = []
        self.connects = 0
        self.published: list[int] = []
        self.threads: set[int] = set()
        self.link = MqttLink(
            settings,
            Topics(settings.base_topic),
            loop,
            on_message=self._message,
            on_connected=self._connected,
            on_published=self._published,
            info=lambda: b"{}",
        )

    def _message(self, message: Inbound) -> None:
        self.threads.add(threading.get_ident())
        self.messages.append(message)

    def _connected(self) -> None:
        self.threads.add(threading.get_ident())
        self.connects += 1

    def _published(self, mid: int) -> None:
        self.threads.add(threading.get_ident())
        self.published.append(mid)


def _settings(url: str, **more: Any) -> MqttSettings:
    return MqttSettings(url=url, client_id=f"link-{uuid.uuid4().hex[:8]}", reconnect_max=1, **more)


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.02)


def _run(scenario: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    async def main() -> None:
        await scenario(asyncio.get_running_loop())

    asyncio.run(main())


@pytest.fixture
def sender(broker: Mosquitto) -> Iterator[Collector]:
    client = Collector(broker.port, ["llm2mqtt/bridge/state"])
    yield client
    client.close()


def test_start_returns_connected_with_no_paho_thread_and_callbacks_on_the_loop(
    broker: Mosquitto, sender: Collector
) -> None:
    topic = f"test/{uuid.uuid4().hex[:8]}"

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        before = {t.ident for t in threading.enumerate()}
        harness = Harness(_settings(broker.url), loop)
        harness.link.subscribe(topic)
        await harness.link.start()
        assert harness.link.connected  # start waited for the CONNACK
        client_id = harness.link.settings.client_id
        names = [t.name for t in threading.enumerate() if t.ident not in before]
        assert f"{PAHO_THREAD}{client_id}" not in names, names
        assert not [n for n in names if n.startswith(PAHO_THREAD)], names
        await _until(lambda: harness.connects == 1, 5, "on_connected")
        sender.publish(topic, b"hello")
        await _until(lambda: len(harness.messages) == 1, 5, "the message")
        harness.link.ack(harness.messages[0])
        mid = harness.link.publish(f"{topic}/out", b"answer")
        await _until(lambda: mid in harness.published, 5, "the PUBACK of our publish")
        assert harness.threads == {threading.get_ident()}  # every callback on the loop thread
        await harness.link.stop()
        assert not harness.link.connected
        assert harness.link.client.socket() is None

    _run(scenario)
    # The online state may reach the sender first: wait for the offline one that the stop sent.
    sender.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "offline"})
    assert sender.on("llm2mqtt/bridge/state")[-1].json() == {"state": "offline"}


def test_reconnects_after_the_broker_restarts_on_the_same_port(broker: Mosquitto, sender: Collector) -> None:
    topic = f"test/{uuid.uuid4().hex[:8]}"

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        harness = Harness(_settings(broker.url), loop)
        harness.link.subscribe(topic)
        await harness.link.start()
        assert harness.link.connected
        await asyncio.to_thread(broker.stop)
        await _until(lambda: not harness.link.connected, 10, "the loss noticed")
        await asyncio.sleep(1.5)  # at least one attempt fails while the broker is away
        await asyncio.to_thread(broker.start)
        await _until(lambda: harness.link.connected, 10, "connected again")
        await _until(lambda: harness.connects == 2, 5, "on_connected again")
        await _until(sender.client.is_connected, 10, "the test's own client connected again")
        sender.publish(topic, b"after the restart")
        await _until(lambda: len(harness.messages) == 1, 10, "a message after the restart")
        await harness.link.stop()

    _run(scenario)


def test_a_broker_that_is_away_at_start_is_retried_without_failing_start(tmp_path: Path) -> None:
    late = Mosquitto(tmp_path / "late")

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        harness = Harness(_settings(late.url), loop)
        began = time.monotonic()
        await harness.link.start()  # nothing listens: returns, does not raise
        assert time.monotonic() - began < 3
        assert not harness.link.connected
        await asyncio.to_thread(late.start)
        try:
            await _until(lambda: harness.link.connected, 10, "connected once the broker came")
        finally:
            await harness.link.stop()
            await asyncio.to_thread(late.stop)

    _run(scenario)


def test_the_receive_bound_pauses_reading_until_bytes_come_back(broker: Mosquitto, sender: Collector) -> None:
    topic = f"test/{uuid.uuid4().hex[:8]}"
    big = b"x" * 600_000

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        harness = Harness(_settings(broker.url, receive_memory="1MB"), loop)
        harness.link.subscribe(topic)
        await harness.link.start()
        for _ in range(3):
            sender.publish(topic, big)
        await _until(lambda: len(harness.messages) == 2, 10, "two messages, 1.2 MB")
        await asyncio.sleep(1.0)
        assert len(harness.messages) == 2  # the third waits at the broker and in the kernel
        assert harness.link.socket.paused
        assert harness.link.budget.waits == 1
        for message in harness.messages:
            harness.link.ack(message)  # journaled: the bytes come back
        await _until(lambda: len(harness.messages) == 3, 5, "the third once there was room")
        assert not harness.link.socket.paused
        assert harness.link.budget.overruns == 0
        await harness.link.stop()

    _run(scenario)


def test_the_receive_bound_holds_reading_back_half_the_keepalive_at_most(
    broker: Mosquitto, sender: Collector
) -> None:
    topic = f"test/{uuid.uuid4().hex[:8]}"

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        harness = Harness(_settings(broker.url, receive_memory="1MB", keepalive=5), loop)
        harness.link.subscribe(topic)
        await harness.link.start()
        sender.publish(topic, b"x" * 1_100_000)
        sender.publish(topic, b"after")
        await _until(lambda: len(harness.messages) == 1, 10, "the big message")
        began = time.monotonic()
        await _until(lambda: len(harness.messages) == 2, 10, "the next one, without room")
        assert time.monotonic() - began > 2.0  # held back for keepalive / 2 = 2.5s
        assert harness.link.budget.overruns == 1
        assert harness.link.connected
        await harness.link.stop()

    _run(scenario)


def test_a_burst_over_tls_arrives_whole(secure_broker: tuple[int, int, Path]) -> None:
    """paho's TLS socket keeps decrypted bytes the selector does not see: none may be left there."""
    tls_port, plain_port, ca = secure_broker
    topic = f"test/{uuid.uuid4().hex[:8]}"
    count = 500
    sender = Collector(plain_port, [])

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        url = f"mqtts://bridge:s3cret%20pass@127.0.0.1:{tls_port}"
        harness = Harness(_settings(url, tls={"ca_certs": str(ca)}), loop)
        harness.link.subscribe(topic)
        await harness.link.start()
        assert harness.link.connected
        for index in range(count):
            sender.publish(topic, str(index).encode())
        await _until(lambda: len(harness.messages) == count, 20, f"{count} messages over TLS")
        for message in harness.messages:
            harness.link.ack(message)
        assert [m.payload for m in harness.messages] == [str(i).encode() for i in range(count)]
        await harness.link.stop()

    try:
        _run(scenario)
    finally:
        sender.close()


def test_qos_0_messages_are_reported_once_written_without_paho_building_a_puback_for_each(
    broker: Mosquitto,
) -> None:
    topic = f"test/{uuid.uuid4().hex[:8]}"
    receiver = Collector(broker.port, [f"{topic}/#"])

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        harness = Harness(_settings(broker.url), loop)
        await harness.link.start()
        client = harness.link.client
        paho_calls: list[int] = []
        handler = client.on_publish
        assert handler is not None

        def counted(*args: Any) -> None:
            paho_calls.append(args[2])
            handler(*args)

        client.on_publish = counted  # public API: paho calls this for each message it reports
        mids = [
            harness.link.publish(f"{topic}/event", b"queued", qos=0),
            harness.link.publish(f"{topic}/result", b"answer", qos=1),
            harness.link.publish(f"{topic}/event", b"started", qos=0),
            harness.link.publish(f"{topic}/event", b"done", qos=0),
        ]
        await _until(lambda: set(mids) <= set(harness.published), 5, "every message reported")
        # Only the QoS 1 message's PUBACK went through paho's callback (the link's own online
        # state and info, QoS 1 too, may come before or after the counting began).
        assert [mid for mid in paho_calls if mid in mids] == [mids[1]]
        await harness.link.stop()

    try:
        _run(scenario)
        receiver.wait_for(f"{topic}/event", where=lambda m: m.payload == b"done")
        assert [m.payload for m in receiver.on(f"{topic}/event")] == [b"queued", b"started", b"done"]
        assert [m.payload for m in receiver.on(f"{topic}/result")] == [b"answer"]
    finally:
        receiver.close()


needs_cork = pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux's")


@needs_cork
def test_a_corked_socket_holds_small_writes_until_released() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with sender, peer:
            sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer.settimeout(0.05)
            assert cork(sender, True)
            sender.send(b"puback ")
            sender.send(b"result")
            with pytest.raises(TimeoutError):  # held: neither write has left
                peer.recv(100)
            assert cork(sender, False)
            peer.settimeout(5)
            received = b""
            while len(received) < 13:
                received += peer.recv(100)
            assert received == b"puback result"
    assert not cork(None, True)  # no socket (closed meanwhile, or a websocket): nothing done


@needs_cork
def test_the_link_leaves_its_socket_uncorked_after_each_write(broker: Mosquitto) -> None:
    topic = f"test/{uuid.uuid4().hex[:8]}"
    receiver = Collector(broker.port, [f"{topic}/#"])

    async def scenario(loop: asyncio.AbstractEventLoop) -> None:
        harness = Harness(_settings(broker.url), loop)
        await harness.link.start()
        mids = [harness.link.publish(f"{topic}/{i}", b"x", qos=i % 2) for i in range(6)]
        await _until(lambda: set(mids) <= set(harness.published), 5, "every message reported")
        sock = harness.link.client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
        await harness.link.stop()

    try:
        _run(scenario)
        receiver.wait_for(f"{topic}/#", 6)
    finally:
        receiver.close()
