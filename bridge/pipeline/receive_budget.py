"""How many bytes of received input the daemon holds in memory before they are journaled.

paho reads the broker's socket on the loop and hands each message to the intake, where it waits
(the journal's group commit) until its job is durable and the message is acknowledged. A broker
may send a whole flood at once (the receive maximum is large, see `MqttLink.start`), so without
a bound every payload of it would sit in memory together.

Once the payloads held reach the limit, the link takes the broker's socket out of the loop's
selector (`LoopSocket.pause_reading`) until bytes come back (`on_room`). paho then reads nothing
more: the rest of the flood waits in the kernel's socket buffers and at the broker (TCP
backpressure). That is safe only with a broker that keeps what it cannot write: Mosquitto counts
the packets it has not yet written to a client against `max_queued_messages` (1000 by default)
and drops QoS 1 messages past it, as a default Mosquitto did in
`tests/e2e/test_receive_memory.py` once the bound held its socket back. So the bound is off
unless `mqtt.receive_memory` is set. Nothing waits on the loop: the journal keeps committing and
giving bytes back while reading pauses.

Each message holds a `Claim`. It is given back when the message is acknowledged, and in any case
when the message is freed: dropped while stopping, refused, a duplicate, failed, or a delivery
from a connection lost since (the broker sends it again as a new message with a claim of its
own). So no path leaves the count too high for good.
"""

import threading
from collections.abc import Callable


class Claim:
    """The bytes one received message holds; given back once, at the latest when it is freed."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: "ReceiveBudget", size: int) -> None:
        self._budget: ReceiveBudget | None = budget
        self.size = size

    def release(self) -> None:
        """Give the bytes back (again: nothing happens)."""
        budget = self._budget
        if budget is not None:
            budget.give_back(self)

    def __del__(self) -> None:
        self.release()


class ReceiveBudget:
    """Payload bytes received and not yet journaled, and whether they have reached `limit`.

    A claim never waits: the link asks `full()` after each message and stops reading while it
    is; `on_room` is told once bytes come back below the limit.
    """

    def __init__(self, limit: int | None, on_room: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.on_room = on_room
        self.held = 0
        self.waits = 0  # how often reading paused for room
        self.overruns = 0  # how often it went on without room, so the connection stays alive
        self._closed = False
        # Reentrant: a Claim freed (by the garbage collector) while this thread holds the lock
        # gives its bytes back without deadlocking. A lock at all: the collector may free one
        # on another thread.
        self._lock = threading.RLock()

    def claim(self, size: int) -> Claim:
        """Count `size` bytes as held (on the loop, as a message arrives)."""
        with self._lock:
            self.held += size
        return Claim(self, size)

    def full(self) -> bool:
        """Are the bytes held at the limit (so that reading should pause)?"""
        return self.limit is not None and not self._closed and self.held >= self.limit

    def give_back(self, claim: Claim) -> None:
        with self._lock:
            if claim._budget is None:
                return  # given back already
            claim._budget = None
            was_full = self.full()
            self.held -= claim.size
            room = was_full and not self.full()
        if room and self.on_room is not None:
            self.on_room()

    def close(self) -> None:
        """Never full again (the link is stopping: nothing may hold reading back)."""
        with self._lock:
            was_full = self.full()
            self._closed = True
        if was_full and self.on_room is not None:
            self.on_room()
