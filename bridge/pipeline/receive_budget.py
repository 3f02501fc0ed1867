"""How many bytes of received input the daemon holds in memory before they are journaled.

paho reads the broker's socket on its own thread and hands each message to the loop, where it
waits (the hand-over, the intake, the journal's group commit) until its job is durable and the
message is acknowledged. A broker may send a whole flood at once (the receive maximum is large,
see `MqttLink.start`), so without a bound every payload of it would sit in memory together.

The budget makes paho's thread wait, before it hands a message on, while the payloads held are
over the limit. paho then reads nothing more: the rest of the flood waits in the kernel's socket
buffers and at the broker (TCP backpressure). That is safe only with a broker that keeps what it
cannot write: Mosquitto counts the packets it has not yet written to a client against
`max_queued_messages` (1000 by default) and drops QoS 1 messages past it, as a default Mosquitto
did in `tests/e2e/test_receive_memory.py` once the bound held its socket back. So the bound is
off unless `mqtt.receive_memory` is set. The journal never waits for paho's thread, so the loop keeps
committing and giving bytes back.

Each message holds a `Claim`. It is given back when the message is acknowledged, and in any case
when the message is freed: dropped while stopping, refused, a duplicate, failed, or a delivery
from a connection lost since (the broker sends it again as a new message with a claim of its
own). So no path leaves the count too high for good.
"""

import logging
import threading
import time

log = logging.getLogger(__name__)


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
    """Payload bytes received and not yet journaled, and the wait while they are over `limit`.

    One message larger than the whole limit still passes when nothing else is held.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.held = 0
        self.waits = 0  # messages that had to wait for room
        self.overruns = 0  # messages let through without room, so the connection stays alive
        self._closed = False
        # Reentrant: a Claim freed (by the garbage collector) while this thread holds the lock
        # gives its bytes back without deadlocking.
        self._room = threading.Condition(threading.RLock())

    def claim(self, size: int, patience: float) -> Claim:
        """Take `size` bytes, first waiting for room, at most `patience` seconds (paho's thread).

        Past `patience` the message passes anyway (counted in `overruns`): paho's thread must
        come back to send acknowledgements and keep-alives before the broker gives up on us.
        """
        deadline = time.monotonic() + patience
        with self._room:
            if not self._fits(size):
                self.waits += 1
                log.debug(
                    "%s bytes of input wait to be journaled (mqtt.receive_memory: %s); reading "
                    "from the broker pauses",
                    f"{self.held:,}",
                    f"{self.limit:,}",
                )
            while not self._fits(size):
                left = deadline - time.monotonic()
                if left <= 0:
                    self.overruns += 1
                    log.warning(
                        "received input has waited %.0fs to be journaled; reading on past "
                        "mqtt.receive_memory so that the broker connection stays alive",
                        patience,
                    )
                    break
                self._room.wait(left)
            self.held += size
            return Claim(self, size)

    def _fits(self, size: int) -> bool:
        return self.limit is None or self._closed or self.held == 0 or self.held + size <= self.limit

    def give_back(self, claim: Claim) -> None:
        with self._room:
            if claim._budget is None:
                return  # given back already
            claim._budget = None
            self.held -= claim.size
            self._room.notify_all()

    def close(self) -> None:
        """Stop waiting for good: wakes a waiting thread (the link is stopping)."""
        with self._room:
            self._closed = True
            self._room.notify_all()
