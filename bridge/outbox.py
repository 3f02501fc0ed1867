"""The outbox pump: messages leave the journal only once the broker has them.

Rows are handed to paho in order, at most `window` at a time. A QoS 1 row is deleted when
the broker acknowledges it (PUBACK); QoS 0 when paho has written it. After a crash, rows still
in the table are published again: delivery is at least once, and every result carries its
job_id so a consumer can tell a repeat.
"""

import logging
from typing import Protocol

from bridge.journal import Journal, OutboxMessage

log = logging.getLogger(__name__)


class Publisher(Protocol):
    connected: bool

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        props: dict[str, object] | None = None,
    ) -> int | None: ...


class Outbox:
    """Publishes the journal's outbox table through a `Publisher`."""

    def __init__(self, journal: Journal, publisher: Publisher, *, window: int = 200) -> None:
        self._journal = journal
        self._publisher = publisher
        self._window = window
        self._in_flight: dict[int, OutboxMessage] = {}  # paho mid -> outbox row
        self._last_sent = 0

    def add(self, messages: list[OutboxMessage]) -> None:
        """Queue messages durably; they are sent once the write is committed."""
        self._journal.add_messages(messages)
        self.notify()

    def notify(self) -> None:
        """Messages were written to the journal: send them once they are committed."""
        self._journal.after_commit(self.pump)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def pump(self) -> None:
        """Hand waiting rows to the publisher, up to the window."""
        while len(self._in_flight) < self._window:
            room = self._window - len(self._in_flight)
            rows = self._journal.pending_messages(after=self._last_sent, limit=room)
            if not rows:
                return
            for row in rows:
                mid = self._publisher.publish(
                    row.topic, row.payload, qos=row.qos, retain=row.retain, props=row.props
                )
                if mid is None:
                    return  # not connected (QoS 0) or refused: try again on the next pump
                self._in_flight[mid] = row
                self._last_sent = row.id

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
        self.pump()

    def on_published(self, mid: int) -> None:
        """The broker has the message with this mid: forget its row."""
        row = self._in_flight.pop(mid, None)
        if row is None:
            return  # one of the link's own messages (state, info)
        # Inside the loop's group commit, so deleting one row at a time costs no extra fsync.
        self._journal.delete_messages([row.id])
        self.pump()
