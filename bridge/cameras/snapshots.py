"""Snapshot sources of scheduled rules: an HTTP(S) URL, or an MQTT request answered on a reply topic.

Both are bounded in time and size; a failure is a `SnapshotError` with a message a person can
act on, never a crash.
"""

import asyncio
import logging
from collections.abc import Callable

import httpx

from bridge.config.cameras import SnapshotOptions
from bridge.errors import InputError
from bridge.pipeline.fetch import fetch_image
from bridge.pipeline.mqtt import Inbound
from bridge.pipeline.payloads import looks_like_image

log = logging.getLogger(__name__)


class SnapshotError(InputError):
    """The snapshot could not be taken; the next tick tries again."""


Publish = Callable[[str, bytes], object]


class Snapshots:
    """Takes snapshots for rules. `on_reply` receives the messages of every reply topic."""

    def __init__(self, http: httpx.AsyncClient, publish: Publish, *, max_bytes: int) -> None:
        self._http = http
        self._publish = publish
        self._max_bytes = max_bytes
        self._pending: dict[str, list[asyncio.Future[bytes]]] = {}

    def reply_topics(self, sources: list[SnapshotOptions]) -> list[str]:
        return sorted({s.mqtt_reply for s in sources if s.mqtt_reply is not None})

    async def take(self, options: SnapshotOptions) -> bytes:
        """The image bytes, or SnapshotError."""
        limit = min(options.max_size or self._max_bytes, self._max_bytes)
        if options.url is not None:
            headers = {"Authorization": f"Bearer {options.token}"} if options.token else None
            try:
                return await fetch_image(
                    self._http, options.url, max_bytes=limit, timeout=options.timeout, headers=headers
                )
            except InputError as exc:
                raise SnapshotError(f"snapshot failed: {exc}") from None
        assert options.mqtt_request is not None
        assert options.mqtt_reply is not None
        return await self._ask_mqtt(options.mqtt_request, options.mqtt_reply, options, limit)

    async def _ask_mqtt(self, request: str, reply: str, options: SnapshotOptions, limit: int) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiters = self._pending.setdefault(reply, [])
        waiters.append(future)
        try:
            self._publish(request, options.request_payload.encode())
            async with asyncio.timeout(options.timeout):
                data = await future
        except TimeoutError:
            raise SnapshotError(
                f"snapshot failed: no image on {reply} within {options.timeout:g}s"
                f" after a request on {request}"
            ) from None
        finally:
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._pending.pop(reply, None)
        if len(data) > limit:
            raise SnapshotError(
                f"snapshot failed: the reply on {reply} is {len(data):,} bytes, above {limit:,}"
            )
        if not looks_like_image(data):
            raise SnapshotError(f"snapshot failed: the reply on {reply} is not a JPEG, PNG or WebP image")
        return data

    def on_reply(self, message: Inbound) -> None:
        """A message on a reply topic: it answers every request waiting there."""
        if message.retain:
            return  # an old image kept by the broker, not the answer to our request
        for future in self._pending.pop(message.topic, []):
            if not future.done():
                future.set_result(message.payload)
