"""Sending one outbox row to an outside service until the service accepts it.

The outbox keeps a row until its sink reports it done, so the sinks that talk to services
(SNS, SQS, Apprise) only have to keep trying, with growing pauses, and give up on a row only
when no retry can help (the error says `permanent`): such a row is logged and dropped, so it
cannot hold back the rows behind it forever.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Pauses between tries: `first` seconds, doubling up to `most`."""

    first: float
    most: float


async def send_until_accepted(
    send: Callable[[], Awaitable[None]],
    *,
    refused: type[Exception] | tuple[type[Exception], ...],
    what: str,
    backoff: Backoff,
) -> bool:
    """Await `send()` until it returns: True once sent, False when it was refused for good.

    `refused` are the errors a service gives; one with a true `permanent` attribute ends the
    tries. `what` names the row in log lines ("sns: a message to arn:…")."""
    delay = backoff.first
    while True:
        try:
            await send()
        except refused as exc:
            if getattr(exc, "permanent", False):
                log.error("%s can never be sent: %s; dropping it", what, exc)
                return False
            log.warning("%s was not sent: %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, backoff.most)
            continue
        return True
