"""The outbox pump: messages leave the journal only once the broker has them.

Rows are handed to paho in order, at most `window` at a time, once the write that added them
is committed. A QoS 1 row is delivered when the broker acknowledges it (PUBACK); QoS 0 when
paho has written it. Delivered rows are deleted together, one statement every `DELETE_EVERY`
seconds rather than one per loop iteration. After a crash, rows still in the table are
published again (those delivered in the last `DELETE_EVERY` seconds among them): delivery is
at least once, and every result carries its job_id so a consumer can tell a repeat.

QoS 0 telemetry (lifecycle events) has no row: the journal hands it over once the write it
belongs to is committed, and it is sent after the rows committed with it, while the broker
is connected (at most `MAX_EVENTS` wait for a connection; older ones are dropped). Kinds of
event left out of `mqtt.job_events` are not published at all (the journal still shows them to
its taps, the web console).

Rows for other sinks (SNS, SQS) are handed to the `Sink` registered for their name and
deleted when it reports them accepted; a sink retries on its own, and a row it never
accepted is handed over again after a restart. `when_delivered(job_id, cb)` calls back once
every row that finished the job has left the table.
"""

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol

from bridge.pipeline.journal import Journal, OutboxMessage

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000
# Delivered rows are gathered this long (seconds) and deleted in one statement.
DELETE_EVERY = 0.1


class Publisher(Protocol):
    connected: bool

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        props: dict[str, Any] | None = None,
    ) -> int | None: ...


class Sink(Protocol):
    """Delivers outbox rows somewhere other than MQTT; calls `done(row.id)` once accepted."""

    def send(self, row: OutboxMessage, done: Callable[[int], None]) -> None: ...


class Outbox:
    """Publishes the journal's outbox table through a `Publisher`."""

    def __init__(
        self,
        journal: Journal,
        publisher: Publisher,
        *,
        window: int = 200,
        loop: asyncio.AbstractEventLoop | None = None,
        unpublished: Collection[str] = (),
    ) -> None:
        self._journal = journal
        self._publisher = publisher
        self._window = window
        self._loop = loop
        self._in_flight: dict[int, OutboxMessage] = {}  # paho mid -> outbox row
        self._last_sent = 0
        self._maybe_more = True  # rows may wait in the table beyond what was read
        self._delivered: list[OutboxMessage] = []  # waiting for the next delete
        self._delete_at: asyncio.TimerHandle | None = None
        self._pump_soon = False
        self._sinks: dict[str, Sink] = {}
        self._sink_rows: dict[int, OutboxMessage] = {}  # row id -> row, handed to a sink
        self._last_sink_row = 0
        self._sink_more = True
        self._waiters: dict[str, list[Callable[[], None]]] = {}  # job id -> callbacks
        self._unpublished = frozenset(unpublished)  # event kinds kept off the broker
        journal.on_every_commit(self._on_durable)

    def add_sink(self, name: str, sink: Sink) -> None:
        """Deliver rows whose `sink` is `name` through `sink` (SNS, SQS)."""
        self._sinks[name] = sink
        self._sink_more = True

    def when_delivered(self, job_id: str, callback: Callable[[], None]) -> None:
        """Call `callback` once no outbox row of `job_id` is left (now, if none is)."""
        if self._journal.outputs_pending(job_id) == 0:
            callback()
        else:
            self._waiters.setdefault(job_id, []).append(callback)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def busy(self) -> bool:
        """Rows wait for the broker's acknowledgement, or for the fsync before they are sent."""
        return bool(self._in_flight) or self._journal.syncing

    def add(self, messages: Iterable[OutboxMessage], *, urgent: bool = True) -> None:
        """Queue messages durably. Urgent ones make the journal commit now; others ride along."""
        self._journal.add_messages(messages)
        if not self._journal.in_transaction:
            # Only telemetry, with nothing to wait for: no rows were added, so none is looked
            # for unless earlier ones still wait.
            self.pump()
            return
        self.notify(urgent=urgent)

    def notify(self, *, urgent: bool = True) -> None:
        """Rows were written: send them after the commit (which tells `_on_durable`); urgent
        ones make the journal commit now."""
        if urgent:
            self._journal.commit_soon()

    def _on_durable(self) -> None:
        # The table is read again only when this commit made rows durable that were not read.
        newest = self._journal.durable_row
        self._maybe_more = self._maybe_more or newest > self._last_sent
        self._sink_more = self._sink_more or newest > self._last_sink_row
        self.pump()

    def pump(self) -> None:
        """Hand waiting, durable rows to the publisher, up to the window (the journal never
        returns a row whose commit is not on disk yet: this runs again once it is)."""
        if self._sinks:
            self._pump_sinks()
        while self._maybe_more and len(self._in_flight) < self._window:
            room = self._window - len(self._in_flight)
            durable = self._journal.durable_row
            rows = self._journal.pending_messages(after=self._last_sent, limit=room, mqtt=True)
            for row in rows:
                mid = self._publisher.publish(
                    row.topic, row.payload, qos=row.qos, retain=row.retain, props=row.props
                )
                if mid is None:
                    return  # not connected (QoS 0) or refused: again after the next connect
                self._in_flight[mid] = row
                self._last_sent = row.id
            if len(rows) < room:
                self._maybe_more = False
                # Every MQTT row up to `durable` is sent: the next read starts past the other
                # sinks' rows there too, not at the last MQTT row (SNS rows pile up while SNS
                # is away, and would be read again after every commit).
                self._last_sent = max(self._last_sent, durable)
        if not self._maybe_more:
            self._send_events()

    def _send_events(self) -> None:
        """Send the committed telemetry, after the rows committed with it."""
        events = self._journal.take_events()
        if self._unpublished:
            events = [m for m in events if m.kind not in self._unpublished]
        for at, message in enumerate(events):
            if self._publisher.publish(message.topic, message.payload, qos=0) is None:
                waiting = events[at:]
                if len(waiting) > MAX_EVENTS:
                    log.warning("no broker: %d lifecycle events dropped", len(waiting) - MAX_EVENTS)
                    waiting = waiting[-MAX_EVENTS:]
                self._journal.return_events(waiting)
                return

    def _pump_sinks(self) -> None:
        # Other sinks have their own cursor, so a broker outage does not hold back SNS.
        while self._sink_more and len(self._sink_rows) < self._window:
            room = self._window - len(self._sink_rows)
            durable = self._journal.durable_row
            rows = self._journal.pending_messages(after=self._last_sink_row, limit=room, mqtt=False)
            for row in rows:
                self._last_sink_row = row.id
                sink = self._sinks.get(row.sink)
                if sink is None:
                    log.warning("outbox row %d is for sink %r, which is not configured", row.id, row.sink)
                    continue
                self._sink_rows[row.id] = row
                sink.send(row, self._sink_done)
            if len(rows) < room:
                self._sink_more = False
                # As for MQTT above: the next read starts past the MQTT rows up to here.
                self._last_sink_row = max(self._last_sink_row, durable)

    def _sink_done(self, row_id: int) -> None:
        row = self._sink_rows.pop(row_id, None)
        if row is not None:
            self._delivered_row(row)

    def _settle(self, rows: Iterable[OutboxMessage]) -> None:
        """Call back those who wait for a job whose last row just went."""
        for job_id in {row.job_id for row in rows if row.job_id in self._waiters}:
            if job_id is not None and self._journal.outputs_pending(job_id) == 0:
                for callback in self._waiters.pop(job_id, []):
                    callback()

    def on_connected(self) -> None:
        # paho resends its QoS 1 messages after a reconnect but drops QoS 0 ones it had not
        # written yet; send those again.
        for mid, row in list(self._in_flight.items()):
            if row.qos == 0:
                del self._in_flight[mid]
                new_mid = self._publisher.publish(
                    row.topic, row.payload, qos=0, retain=row.retain, props=row.props
                )
                if new_mid is not None:
                    self._in_flight[new_mid] = row
        self._maybe_more = True
        self.pump()

    def on_published(self, mid: int) -> None:
        """The broker has the message with this mid: its row can go."""
        row = self._in_flight.pop(mid, None)
        if row is not None:  # else one of the link's own messages (state, info)
            self._delivered_row(row)

    def _delivered_row(self, row: OutboxMessage) -> None:
        self._delivered.append(row)
        if self._loop is None:
            self._flush_and_pump()
            return
        if self._delete_at is None:
            # One delete per DELETE_EVERY, however many rows were delivered meanwhile.
            self._delete_at = self._loop.call_later(DELETE_EVERY, self._flush_and_pump)
        if (self._maybe_more or self._sink_more) and not self._pump_soon:
            # Room in the window for rows still in the table: one pump per loop iteration.
            self._pump_soon = True
            self._loop.call_soon(self._pump_now)

    def _pump_now(self) -> None:
        self._pump_soon = False
        self.pump()

    def _flush_and_pump(self) -> None:
        self.flush()
        self.pump()

    def flush(self) -> None:
        """Delete the rows delivered so far, sending nothing new (at a stop, so that they are not
        sent again at the next start)."""
        if self._delete_at is not None:
            self._delete_at.cancel()
            self._delete_at = None
        delivered, self._delivered = self._delivered, []
        if delivered:
            # Nobody waits for a delete: if it is lost in a crash, the row is sent once more.
            self._journal.delete_messages(r.id for r in delivered)
            if self._waiters:
                self._settle(delivered)
