"""The broker connection, on paho-mqtt 2.

Concurrency: paho runs on the daemon's asyncio loop (see paho_socket.py), so its callbacks run
on the loop thread and call the daemon's handlers directly, in the order paho reads the packets.
Nothing here may block: a handler that would wait hands its work to a task or a thread.

When `mqtt.receive_memory` is set and the received payloads not yet journaled reach it, the link
stops reading from the broker's socket until the journal gives bytes back, and at most half the
keepalive, so that acks and pings still get through (see receive_budget.py).
"""

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.config.settings import MqttSettings
from bridge.pipeline.paho_socket import LoopSocket, connect_failure
from bridge.pipeline.receive_budget import Claim, ReceiveBudget
from bridge.pipeline.topics import Topics

log = logging.getLogger(__name__)

REMIND_EVERY = 300.0  # how often the log repeats that the broker is still missing (seconds)
FIRST_CONNECT = 2.0  # how long `start` waits for the broker's first answer (seconds)

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
        self._settled = asyncio.Event()  # the first attempt has an outcome
        self._offline_mid: int | None = None
        self._said_offline = asyncio.Event()
        self.connected = False
        self.since: float | None = None  # when the link last came up or went down (epoch)
        self._missing_since: float | None = None  # monotonic; set while the broker cannot be reached
        self._stopping = False
        self.budget = ReceiveBudget(settings.receive_memory, on_room=self._room)
        if settings.shared_group:
            # Daemons of one group share bridge/state; one that dies leaves its last will there.
            # The others answer it with `online` again (QoS 0: nothing to acknowledge).
            self._subscriptions[topics.state] = 0
        self._reminded = 0.0
        self.v5 = settings.protocol == "5"
        self.client = self._make_client()
        self.socket = LoopSocket(
            self.client,
            loop,
            on_connect_fail=self._handle_connect_fail,
            min_delay=1.0,
            max_delay=float(settings.reconnect_max),
        )
        # QoS 0 messages handed to paho and not yet written, oldest first (paho writes them in
        # order); told to `on_published` once written (LoopSocket._write says why not by paho).
        self._unwritten: deque[paho.MQTTMessageInfo] = deque()
        self.socket.written = self._written

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
        # paho keeps QoS 1 messages published while offline and sends them on reconnect;
        # the outbox bounds how many it hands over, so paho's own queue needs no limit.
        client.max_inflight_messages_set(100)
        client.on_connect = self._handle_connect
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

    async def start(self, wait: float = FIRST_CONNECT) -> None:
        """Connect in the background, waiting up to `wait` seconds for the broker's answer, so that
        callers see a connected link; a broker that is away is only logged and retried."""
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
        self.socket.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), wait)

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
        if qos == 0:
            self._unwritten.append(info)
        return info.mid

    def _written(self) -> None:
        unwritten = self._unwritten
        while unwritten and _published(unwritten[0]):
            self._call(self._on_published, unwritten.popleft().mid)

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

    async def stop(self, timeout: float = 3.0) -> None:
        """Say offline (retained), then disconnect cleanly and leave the loop."""
        self._stopping = True
        self.budget.close()  # reading may be held back: it must go on to see the broker's ack
        if self.connected:
            self._said_offline.clear()  # set by an earlier loss of the broker, maybe
            info = self.client.publish(self.topics.state, OFFLINE, qos=1, retain=True)
            self._offline_mid = info.mid  # its PUBACK (or the connection's loss) sets _said_offline
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._said_offline.wait(), timeout)
            if not _published(info):
                log.warning("could not publish the offline state before disconnecting")
        await self.socket.stop(timeout)
        self.connected = False

    # -- paho callbacks (on the loop) ---------------------------------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._settled.set()
        if reason.is_failure:
            log.error("the broker at %s refused the connection: %s", self.settings.safe_url(), reason)
            return
        self.connected, self.since = True, time.time()
        self._unwritten.clear()  # paho drops the QoS 0 packets it had not written: never written now
        self.socket.connected()
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
        self._call(self._on_connected)

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._settled.set()
        self._said_offline.set()  # nothing more to wait for in `stop`
        was = self.connected
        self.connected = False
        if was:
            self.since = time.time()
        if was and reason.is_failure:
            log.warning("lost the broker (%s); reconnecting", reason)

    def _handle_connect_fail(self, exc: BaseException) -> None:
        # The socket retries by itself; the log says once per reason, then every few minutes,
        # what is missing (nothing listening, a refused connection, a certificate that does not fit).
        self._settled.set()
        reason = connect_failure(exc)
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
        self.socket.handled += 1
        if message.topic == self.topics.state and self.settings.shared_group:
            if bytes(message.payload) == OFFLINE and self.connected and not self._stopping:
                client.publish(self.topics.state, ONLINE, qos=1, retain=True)  # another one left
            return
        if self._stopping:
            return  # not acknowledged: the broker sends it again to our next session
        claim = None
        if self.budget.limit is not None:  # off by default: nothing to count or hold back
            claim = self.budget.claim(len(message.payload))
            if self.budget.full():
                self._hold_back()
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
        self._call(self._on_message, inbound)

    def _handle_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties
    ) -> None:
        self.socket.handled += 1
        if mid == self._offline_mid:
            self._said_offline.set()
        self._call(self._on_published, mid)

    def _call(self, handler: Callable[..., None], *args: Any) -> None:
        """Run a handler of the daemon's; an error is logged, and paho's reading goes on."""
        try:
            handler(*args)
        except Exception:
            log.exception("handling a broker event failed")

    # -- mqtt.receive_memory -----------------------------------------------------------

    def _hold_back(self) -> None:
        """Read no more until the journal gives bytes back; at most half the keepalive, so that
        acknowledgements and pings still get through in time."""
        if self.socket.paused or self._stopping:
            return
        self.budget.waits += 1
        log.debug(
            "%s bytes of input wait to be journaled (mqtt.receive_memory: %s); reading from the "
            "broker pauses",
            f"{self.budget.held:,}",
            f"{self.budget.limit:,}",
        )
        self.socket.pause_reading(self.settings.keepalive / 2, self._overdue)

    def _overdue(self) -> None:
        self.budget.overruns += 1
        log.warning(
            "received input has waited %.0fs to be journaled; reading on past mqtt.receive_memory "
            "so that the broker connection stays alive",
            self.settings.keepalive / 2,
        )

    def _room(self) -> None:
        """Bytes came back below mqtt.receive_memory (on the loop, or freed on another thread)."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.socket.resume_reading)


def _published(info: paho.MQTTMessageInfo) -> bool:
    try:
        return info.is_published()
    except (RuntimeError, ValueError):  # not queued, or lost with the connection
        return False


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
