"""The broker connection, on paho-mqtt 2.

Concurrency: paho runs its network loop on its own thread. Its callbacks never do work there;
they hand every event to the asyncio loop, in order, through one list: the first event of a
batch wakes the loop (`call_soon_threadsafe`), the ones paho reads before the loop runs ride
along, so a burst of acks costs one wake-up, not one each. Calls into paho from the loop
(publish, ack) are safe: paho guards its queues with locks.

When `mqtt.receive_memory` is set and the received payloads not yet journaled are over it, paho's thread
waits in `_handle_message` (see receive_budget.py). Nothing on the loop waits for that thread:
publish and ack only queue a packet (under locks paho does not hold while it runs on_message),
and paho writes them once the thread goes on. `stop` wakes the thread before it waits on it.
"""

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.config.settings import MqttSettings
from bridge.pipeline.receive_budget import Claim, ReceiveBudget
from bridge.pipeline.topics import Topics

log = logging.getLogger(__name__)

REMIND_EVERY = 300.0  # how often the log repeats that the broker is still missing (seconds)

ONLINE = json.dumps({"state": "online"}).encode()
OFFLINE = json.dumps({"state": "offline"}).encode()


@dataclass(frozen=True)
class Inbound:
    """A message from the broker. QoS 1 messages stay unacknowledged until `MqttLink.ack`."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None
    # Its share of mqtt.receive_memory: given back on `MqttLink.ack`, or when it is freed.
    claim: Claim | None = field(default=None, compare=False, repr=False)


class MqttLink:
    """One persistent-session connection that publishes, subscribes and acknowledges."""

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        loop: asyncio.AbstractEventLoop,
        *,
        on_message: Callable[[Inbound], None],
        on_connected: Callable[[], None],
        on_published: Callable[[int], None],
        info: Callable[[], bytes],
    ) -> None:
        self.settings = settings
        self.topics = topics
        self._loop = loop
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_published = on_published
        self._info = info
        self._subscriptions: dict[str, int] = {}
        self._last_failure: str | None = None
        self._handoff: list[Callable[[], None]] = []  # events from paho's thread, in order
        self._handoff_lock = threading.Lock()
        self.connected = False
        self.since: float | None = None  # when the link last came up or went down (epoch)
        self._missing_since: float | None = None  # monotonic; set while the broker cannot be reached
        self._stopping = False
        self.budget = ReceiveBudget(settings.receive_memory)
        if settings.shared_group:
            # Daemons of one group share bridge/state; one that dies leaves its last will there.
            # The others answer it with `online` again (QoS 0: nothing to acknowledge).
            self._subscriptions[topics.state] = 0
        self._reminded = 0.0
        self.v5 = settings.protocol == "5"
        self.client = self._make_client()

    def _make_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            # MQTT 3.1.1: a persistent session is clean_session=False; v5 sets it at connect.
            clean_session=None if self.v5 else False,
            manual_ack=True,
        )
        user, password = s.credentials()
        if user is not None:
            client.username_pw_set(user, password)
        configure_tls(client, s)
        client.will_set(self.topics.state, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(s.reconnect_max)))
        # paho keeps QoS 1 messages published while offline and sends them on reconnect;
        # the outbox bounds how many it hands over, so paho's own queue needs no limit.
        client.max_inflight_messages_set(100)
        client.on_socket_open = _no_delay
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        return client

    def subscribe(self, topic: str, qos: int = 1, *, shared: bool = False) -> None:
        """Subscribe now and after every reconnect. `shared` inputs go through the MQTT 5 shared
        subscription of `mqtt.shared_group` when one is set: the broker hands each message to
        one daemon of the group."""
        group = self.settings.shared_group
        if shared and group:
            topic = f"$share/{group}/{topic}"
        self._subscriptions[topic] = max(qos, self._subscriptions.get(topic, 0))
        if self.connected:
            self.client.subscribe(topic, qos)

    def start(self) -> None:
        s = self.settings
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = int(s.session_expiry)
            # How many unacknowledged inputs the broker may send us at once. Inputs are acked
            # only once journaled; a broker holds the rest in its own queue for us, which has
            # a limit (Mosquitto: max_queued_messages, 1000) past which it drops messages. A
            # large window keeps a burst moving to us, where group commits journal it quickly.
            # (mqtt.receive_memory, when set, stops reading past a bound: see receive_budget.py.)
            properties.ReceiveMaximum = s.receive_maximum
        log.info("connecting to the broker at %s as %r", s.safe_url(), s.client_id)
        self.client.connect_async(
            s.host,
            s.port,
            keepalive=s.keepalive,
            clean_start=False if self.v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self.client.loop_start()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        props: dict[str, Any] | None = None,
    ) -> int | None:
        """Hand a message to paho; returns its mid, or None when it could not be queued.

        QoS 1 messages are queued by paho while the broker is away; QoS 0 ones need a connection.
        """
        if qos == 0 and not self.connected:
            return None
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=self._properties(props))
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("could not publish to %s: %s", topic, paho.error_string(info.rc))
            return None
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos == 0:
            return None
        return info.mid

    def _properties(self, props: dict[str, Any] | None) -> Properties | None:
        if not self.v5 or not props:
            return None
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if "correlation_data" in props:
            properties.CorrelationData = bytes.fromhex(props["correlation_data"])
        if "content_type" in props:
            properties.ContentType = props["content_type"]
        return properties

    def ack(self, message: Inbound) -> None:
        """Acknowledge a QoS 1 message (called once its job is durable)."""
        if message.qos > 0:
            self.client.ack(message.mid, message.qos)
        if message.claim is not None:
            message.claim.release()

    def stop(self, timeout: float = 3.0) -> None:
        """Say offline (retained), then disconnect cleanly."""
        self._stopping = True
        self.budget.close()  # paho's thread may wait for room: it must go on to say offline
        if self.connected:
            info = self.client.publish(self.topics.state, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.warning("could not publish the offline state before disconnecting")
        self.client.disconnect()
        self.client.loop_stop()
        self.connected = False

    # -- paho callbacks (paho's thread) ------------------------------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("the broker at %s refused the connection: %s", self.settings.safe_url(), reason)
            return
        self.connected, self.since = True, time.time()
        if self._missing_since is not None:
            away = time.monotonic() - self._missing_since
            log.info("the broker at %s answers again after %.0fs", self.settings.safe_url(), away)
            self._missing_since = None
        self._last_failure = None
        log.info("connected to the broker (session %s)", "resumed" if flags.session_present else "new")
        for topic, qos in self._subscriptions.items():
            client.subscribe(topic, qos)
        client.publish(self.topics.state, ONLINE, qos=1, retain=True)
        client.publish(self.topics.info, self._info(), qos=1, retain=True)
        self._hand_over(self._on_connected)

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was = self.connected
        self.connected = False
        if was:
            self.since = time.time()
        if was and reason.is_failure:
            log.warning("lost the broker (%s); reconnecting", reason)

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho retries by itself; the log says once per reason, then every few minutes, what is
        # missing. paho calls this inside its `except OSError`: the exception in hand is the
        # reason (nothing listening, a refused connection, a certificate that does not fit).
        reason = connect_failure(sys.exc_info()[1])
        now = time.monotonic()
        if self._missing_since is None or reason != self._last_failure:
            self._missing_since = self._missing_since or now
            self._reminded, self._last_failure = now, reason
            log.warning(
                "cannot reach the broker at %s: %s; retrying every %.0fs at most, jobs from other "
                "sources still run",
                self.settings.safe_url(),
                reason,
                self.settings.reconnect_max,
            )
        elif now - self._reminded >= REMIND_EVERY:
            self._reminded = now
            log.warning(
                "still waiting for the broker at %s (away %.0fs): %s",
                self.settings.safe_url(),
                now - self._missing_since,
                reason,
            )

    def _handle_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        quick_ack(client)
        if message.topic == self.topics.state and self.settings.shared_group:
            if bytes(message.payload) == OFFLINE and self.connected and not self._stopping:
                client.publish(self.topics.state, ONLINE, qos=1, retain=True)  # another one left
            return
        if self._stopping:
            return  # not acknowledged: the broker sends it again to our next session
        # Waits while the inputs not yet journaled are over mqtt.receive_memory; at most half
        # the keepalive, so that paho still sends acks and pings in time.
        claim = None
        if self.budget.limit is not None:  # off by default: nothing to count or wait for
            claim = self.budget.claim(len(message.payload), patience=self.settings.keepalive / 2)
            if self._stopping:
                return  # it waited through the start of `stop`: the same as above
        props = getattr(message, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        inbound = Inbound(
            topic=message.topic,
            payload=bytes(message.payload),
            qos=message.qos,
            mid=message.mid,
            retain=bool(message.retain),
            response_topic=response_topic or None,
            correlation_data=correlation,
            claim=claim,
        )
        self._hand_over(lambda: self._on_message(inbound))

    def _handle_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties
    ) -> None:
        quick_ack(client)
        self._hand_over(lambda: self._on_published(mid))

    def _hand_over(self, event: Callable[[], None]) -> None:
        """Queue an event for the loop (paho's thread); wake the loop for the first of a batch."""
        with self._handoff_lock:
            self._handoff.append(event)
            if len(self._handoff) > 1:
                return
        self._loop.call_soon_threadsafe(self._run_handed_over)

    def _run_handed_over(self) -> None:
        with self._handoff_lock:
            events, self._handoff = self._handoff, []
        for event in events:
            try:
                event()
            except Exception:  # as a loop callback would: logged, and the others still run
                log.exception("handling a broker event failed")


def configure_tls(client: paho.Client, settings: MqttSettings) -> None:
    """TLS as the settings ask: one place, so the daemon and `check --live` connect alike."""
    if not settings.use_tls:
        return
    tls = settings.tls
    client.tls_set(
        ca_certs=tls.ca_certs if tls else None,
        certfile=tls.certfile if tls else None,
        keyfile=tls.keyfile if tls else None,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    if tls and tls.insecure:
        client.tls_insecure_set(True)


def connect_failure(exc: BaseException | None) -> str:
    """Why a connection attempt failed, in words a person can act on (TLS reasons spelled out)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: the broker's certificate was not accepted: {exc.verify_message} (check "
            "mqtt.tls.ca_certs and that the host in mqtt.url is the name in the certificate)"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if exc is None:
        return "unknown reason"
    return str(exc) or type(exc).__name__


def _no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """Send small packets (acks, results) at once instead of waiting out Nagle's algorithm."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def quick_ack(client: paho.Client) -> None:
    """Acknowledge what was just read at once, not on the delayed-ACK timer (up to 40 ms).

    A broker without TCP_NODELAY (Mosquitto's default) holds its next small packet to us
    while the previous one is unacknowledged (Nagle): the next job, after the broker's
    PUBACK of our result, would wait for our timer. Linux falls back to delayed ACKs on its
    own, so this is armed after every packet paho reads; elsewhere it does nothing."""
    if _QUICKACK is None:
        return
    sock = client.socket()
    if isinstance(sock, socket.socket):  # not a websocket wrapper, not closed meanwhile
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
