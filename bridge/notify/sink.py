"""Delivering notification rows of the outbox through Apprise, retrying until one is accepted.

Each row is sent on its own task, so a target that is down delays only its own rows. A row
is deleted from the outbox once Apprise reports the message sent: after a crash, rows not
yet sent go out on the next start, and rows that went out are not sent again.
"""

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bridge.config.notify import NotifyTarget
from bridge.pipeline.journal import OutboxMessage
from bridge.pipeline.retry import Backoff, send_until_accepted

log = logging.getLogger(__name__)

SINK = "apprise"


def url_digest(url: str) -> str:
    """Rows name their target by rule, index and this digest, never by the URL (it holds tokens)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class DeliveryFailed(Exception):
    """Apprise did not send; `permanent` when retrying cannot help (a URL it does not know)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def send_with_apprise(url: str, title: str, body: str, attachment: tuple[bytes, str, str] | None) -> None:
    """One notification, blocking (run it in a thread); raises DeliveryFailed."""
    import apprise  # loaded only when a rule notifies
    from apprise.attachment.memory import AttachMemory

    sender = apprise.Apprise()
    if not sender.add(url):
        raise DeliveryFailed("Apprise does not understand the URL (check its scheme)", permanent=True)
    attach = None
    if attachment is not None:
        data, name, mimetype = attachment
        attach = apprise.AppriseAttachment()
        attach.add(AttachMemory(content=data, name=name, mimetype=mimetype))  # type: ignore[no-untyped-call]
    if not sender.notify(body=body, title=title, attach=attach):
        raise DeliveryFailed("the service did not accept the notification")


Sender = Callable[[str, str, str, tuple[bytes, str, str] | None], None]


class AppriseSink:
    """The outbox sink for `apprise` rows."""

    def __init__(
        self,
        targets: Mapping[str, Sequence[NotifyTarget]],
        blob: Callable[[str], bytes],
        *,
        send: Sender = send_with_apprise,
        parallel: int = 4,
        first_delay: float = 1.0,
        max_delay: float = 300.0,
    ) -> None:
        self._targets = targets
        self._blob = blob
        self._send = send
        self._slots = asyncio.Semaphore(parallel)
        self._backoff = Backoff(first_delay, max_delay)
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, row: OutboxMessage, done: Callable[[int], None]) -> None:
        task = asyncio.create_task(self._deliver(row, done), name=f"notify-{row.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop sending; unsent rows stay in the outbox for the next start."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver(self, row: OutboxMessage, done: Callable[[int], None]) -> None:
        body: dict[str, Any] = json.loads(row.payload)
        target = self._target(body)
        if target is None:
            log.warning(
                "%s: dropping a notification for job %s: its notify entry %d changed or is gone",
                body.get("rule"),
                body.get("job_id"),
                body.get("index", -1),
            )
            done(row.id)
            return
        attachment = self._attachment(body)

        async def send() -> None:
            async with self._slots:
                await asyncio.to_thread(self._send, target.url, body["title"], body["message"], attachment)

        await send_until_accepted(
            send,
            refused=DeliveryFailed,
            what=f"{body['rule']}: notify entry {body['index']}",
            backoff=self._backoff,
        )
        done(row.id)

    def _target(self, body: dict[str, Any]) -> NotifyTarget | None:
        targets = self._targets.get(body.get("rule", ""), ())
        index = body.get("index", -1)
        if not isinstance(index, int) or not 0 <= index < len(targets):
            return None
        target = targets[index]
        return target if url_digest(target.url) == body.get("url_digest") else None

    def _attachment(self, body: dict[str, Any]) -> tuple[bytes, str, str] | None:
        attach = body.get("attach")
        if not isinstance(attach, dict):
            return None
        try:
            return self._blob(attach["blob"]), attach["name"], attach["mimetype"]
        except KeyError:
            log.warning(
                "%s: the picture of job %s is gone from the journal; sending without it",
                body["rule"],
                body["job_id"],
            )
            return None
