"""paho-mqtt driven from the asyncio loop: no network thread of paho's own.

paho's external-loop API: the client tells us when its socket opens and closes and when it has
bytes to write; the loop's selector calls `loop_read` / `loop_write` when the socket is ready, a
timer calls `loop_misc` (keep-alive) every second. Every paho callback therefore runs on the
loop thread, and the daemon handles broker events where they happen, with no hand-over between
threads. paho's socket is non-blocking once open; opening it is not (name lookup, TCP connect,
TLS handshake), so each (re)connect attempt runs in the loop's executor and the socket joins the
loop once it is open. Reconnecting, which `loop_start` did for us, is done here, with backoff.
"""

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

log = logging.getLogger(__name__)

MISC_EVERY = 1.0  # how often paho checks its keep-alive (seconds)
# Packets read at most in one turn of the loop: a flood is read in batches (so that the journal
# commits it in groups, not a message at a time), yet the loop's other work still runs.
READ_BATCH = 64


class LoopSocket:
    """Runs one paho client on an asyncio loop: reads, writes, keep-alive and reconnects."""

    def __init__(
        self,
        client: paho.Client,
        loop: asyncio.AbstractEventLoop,
        *,
        on_connect_fail: Callable[[BaseException], None],
        min_delay: float = 1.0,
        max_delay: float = 60.0,
    ) -> None:
        self.client = client
        self._loop = loop
        self._on_connect_fail = on_connect_fail
        self.min_delay = min_delay
        self.max_delay = max(min_delay, max_delay)
        self._delay = min_delay  # the wait before the next attempt; doubles up to max_delay
        self._thread: int | None = None  # the loop's thread, known once start() runs on it
        self._fd: int | None = None  # the open socket's descriptor, as the selector knows it
        self._sock: Any = None
        self._pending: Callable[[], int] | None = None  # TLS: bytes decrypted, not yet read
        self._reading = False
        self._writing = False
        self._paused: asyncio.TimerHandle | None = None
        self._on_overdue: Callable[[], None] | None = None
        self._misc: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._attempt: asyncio.Future[Any] | None = None
        self._closed = asyncio.Event()
        self._closed.set()
        self.stopping = False
        # Counted by the client's message and publish callbacks: reading goes on in one turn
        # while each loop_read (one packet at a time when nothing is in flight) handles one.
        self.handled = 0
        self.written: Callable[[], None] = lambda: None  # after each write; see _write
        client.on_socket_open = self._opened
        client.on_socket_close = self._closed_socket
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._wrote

    # -- connecting --------------------------------------------------------------------

    def start(self) -> None:
        """Make the first attempt now (after `connect_async`); later ones follow by themselves."""
        self._thread = threading.get_ident()
        self.stopping = False
        self._try_now()

    def connected(self) -> None:
        """The broker accepted us: the next loss is retried after the shortest wait again."""
        self._delay = self.min_delay

    def _try_now(self) -> None:
        self._retry = None
        if self.stopping or self._attempt is not None:
            return
        attempt = self._loop.run_in_executor(None, self.client.reconnect)
        self._attempt = attempt
        attempt.add_done_callback(self._tried)

    def _tried(self, attempt: "asyncio.Future[Any]") -> None:
        self._attempt = None
        if attempt.cancelled():
            return
        exc = attempt.exception()
        if exc is None:
            return  # the socket is open and CONNECT sent; the CONNACK comes through loop_read
        if not isinstance(exc, (OSError, ValueError)):
            log.error("connecting to the broker failed unexpectedly", exc_info=exc)
        if not self.stopping:
            self._on_connect_fail(exc)
            self._retry_later()

    def _retry_later(self) -> None:
        if self.stopping or self._retry is not None or self._attempt is not None:
            return
        self._retry = self._loop.call_later(self._delay, self._try_now)
        self._delay = min(self._delay * 2, self.max_delay)

    async def stop(self, timeout: float) -> None:
        """Disconnect (after what is queued is written), wait for the socket to close, and leave the loop."""
        self.stopping = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        attempt = self._attempt
        if attempt is not None:  # an attempt in the executor: let it end, then close what it opened
            await asyncio.wait([attempt], timeout=timeout)
        self.client.disconnect()
        if self._fd is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout)
        self._forget()

    # -- paho's socket callbacks -------------------------------------------------------

    def _on_loop(self, call: Callable[..., None], *args: Any) -> None:
        """Run `call` now on the loop thread, or soon from another (an attempt in the executor)."""
        if threading.get_ident() == self._thread:
            call(*args)
        else:
            self._loop.call_soon_threadsafe(call, *args)

    def _opened(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        no_delay(client, userdata, sock)
        self._on_loop(self._join, sock, sock.fileno())

    def _join(self, sock: Any, fd: int) -> None:
        if sock is not self.client.socket() or fd < 0:
            return  # closed again before the loop came to it
        self._forget()
        self._sock, self._fd = sock, fd
        self._pending = getattr(sock, "pending", None)
        self._closed.clear()
        if self._paused is None:
            self._add_reader()
        if self.client.want_write():
            self._add_writer()
        self._misc = self._loop.call_later(MISC_EVERY, self._keep_alive)

    def _closed_socket(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._leave, sock)

    def _leave(self, sock: Any) -> None:
        if sock is not self._sock:
            return
        self._forget()
        self._retry_later()

    def _forget(self) -> None:
        """Take the socket out of the loop (it is closed, or about to be)."""
        fd = self._fd
        if fd is not None:
            if self._reading:
                self._loop.remove_reader(fd)
            if self._writing:
                self._loop.remove_writer(fd)
        self._reading = self._writing = False
        self._sock = self._fd = self._pending = None
        for timer in (self._misc, self._paused):
            if timer is not None:
                timer.cancel()
        self._misc = self._paused = None
        self._closed.set()

    def _want_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._add_writer, sock)

    def _wrote(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._remove_writer, sock)

    def _add_writer(self, sock: Any = None) -> None:
        if self._fd is None or self._writing or (sock is not None and sock is not self._sock):
            return
        self._writing = True
        self._loop.add_writer(self._fd, self._write)

    def _write(self) -> None:
        """paho writes what it has queued, with its `on_publish` unset meanwhile. For each QoS 0
        message written, paho would otherwise build a reason code and a properties object to
        pass to it (about 18 µs a message; a job's three lifecycle events are QoS 0); `written`
        lets the owner see which QoS 0 messages went out instead (their MQTTMessageInfo). A QoS
        1 message's PUBACK comes through `loop_read`, where `on_publish` is set."""
        client = self.client
        on_publish = client.on_publish
        client.on_publish = None
        sock = self._sock
        corked = cork(sock, True)  # the packets of this turn leave as one stream of segments
        try:
            client.loop_write()
        finally:
            client.on_publish = on_publish
            if corked:
                cork(sock, False)
        self.written()

    def _remove_writer(self, sock: Any = None) -> None:
        if self._fd is None or not self._writing or (sock is not None and sock is not self._sock):
            return
        self._writing = False
        self._loop.remove_writer(self._fd)

    def _add_reader(self) -> None:
        if self._fd is not None and not self._reading:
            self._reading = True
            self._loop.add_reader(self._fd, self._read)

    def _read(self) -> None:
        self._read_batch()
        quick_ack(self.client)  # once per turn: what was read is acknowledged at once

    def _read_batch(self) -> None:
        sock, pending = self._sock, self._pending
        for _ in range(READ_BATCH):
            handled = self.handled
            self.client.loop_read()
            if not self._reading or self._sock is not sock:
                return  # paused, or the connection is gone
            # TLS: bytes read and decrypted wait in the ssl object, where the selector does not
            # see them; they must be read now, not when more come.
            if self.handled == handled and not (pending is not None and pending() > 0):
                return  # nothing more (or a packet without a callback): the selector says when
        if pending is not None and pending() > 0:
            self._loop.call_soon(self._read_on, sock)

    def _read_on(self, sock: Any) -> None:
        if self._reading and self._sock is sock:
            self._read()

    def _keep_alive(self) -> None:
        self._misc = None
        self.client.loop_misc()  # may close the socket (no answer to a ping): then it is gone
        if self._fd is not None and self._misc is None:
            self._misc = self._loop.call_later(MISC_EVERY, self._keep_alive)

    # -- holding back the intake -------------------------------------------------------

    def pause_reading(self, patience: float, on_overdue: Callable[[], None]) -> None:
        """Read nothing more until `resume_reading`, or for `patience` seconds at most, after which
        reading goes on and `on_overdue` is told (keep-alives and acks must still get through)."""
        if self._paused is not None or self._fd is None:
            return
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
        self._on_overdue = on_overdue
        self._paused = self._loop.call_later(patience, self._overdue)

    def resume_reading(self) -> None:
        """Read again (the loop thread only)."""
        if self._paused is None:
            return
        self._paused.cancel()
        self._paused = None
        self._add_reader()

    @property
    def paused(self) -> bool:
        return self._paused is not None

    def _overdue(self) -> None:
        self._paused = None
        self._add_reader()
        if self._on_overdue is not None:
            self._on_overdue()


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


def no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """Send small packets (acks, results) at once instead of waiting out Nagle's algorithm."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_CORK: int | None = getattr(socket, "TCP_CORK", None)  # Linux only


def cork(sock: Any, on: bool) -> bool:
    """Hold (`on`) or release what is written to `sock` as one stream of full segments.

    paho sends each packet with a `send` of its own, and with TCP_NODELAY each becomes a TCP
    segment at once: a job's PUBACK, result, state and events were six segments, each taken
    through the kernel's network path and woken up for by the broker. Corked for the length of
    one `loop_write`, they leave together when it is released. True if it was done."""
    if _CORK is None or not isinstance(sock, socket.socket):  # elsewhere, or a websocket wrapper
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _CORK, int(on))
    except OSError:
        return False
    return True


def quick_ack(client: paho.Client) -> None:
    """Acknowledge what was just read at once, not on the delayed-ACK timer (up to 40 ms).

    A broker without TCP_NODELAY (Mosquitto's default) holds its next small packet to us
    while the previous one is unacknowledged (Nagle): the next job, after the broker's
    PUBACK of our result, would wait for our timer. Linux falls back to delayed ACKs on its
    own, so this is armed again after every turn of reading; elsewhere it does nothing."""
    if _QUICKACK is None:
        return
    sock = client.socket()
    if isinstance(sock, socket.socket):  # not a websocket wrapper, not closed meanwhile
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
