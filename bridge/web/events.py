"""Live events for the console: what the bridge publishes on `<base>/bridge/event`, with results.

The journal shows every committed outbox message to `EventHub.on_messages` (on the loop).
Events are encoded once as Server-Sent Events frames and handed to each open stream's queue;
a stream that falls `QUEUE_SIZE` commits behind is closed (the browser reconnects and asks
for what it missed by `Last-Event-ID`). The hub also tells `POST /api/rules/{name}/run` when
its job has finished.
"""

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from bridge.pipeline.journal import OutboxMessage

QUEUE_SIZE = 256
KEEP = 200  # recent frames kept for a reconnecting browser
HEARTBEAT = 15.0
FLUSH_EVERY = 0.1  # seconds a frame may wait to share a write with the next ones
FINAL_EVENTS = frozenset({"job_done", "job_failed", "job_skipped"})


class EventHub:
    """Fans bridge events out to open event streams and to waiting requests."""

    def __init__(self, event_topic: str, is_result_topic: Callable[[str], bool]) -> None:
        self._event_topic = event_topic
        self._is_result = is_result_topic
        self._streams: set[asyncio.Queue[bytes | None]] = set()
        self._recent: deque[tuple[int, bytes]] = deque(maxlen=KEEP)
        self._seq = 0
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self.published = 0
        self.retained: dict[str, bytes] = {}  # the last retained paused flag per topic
        self._pending: list[bytes] = []
        self._flush: asyncio.TimerHandle | None = None

    @property
    def streams(self) -> int:
        return len(self._streams)

    def on_messages(self, messages: Iterable[OutboxMessage]) -> None:
        """The journal's tap: committed outbox messages, in order."""
        results: dict[str, bytes] = {}
        events: list[OutboxMessage] = []
        for message in messages:
            if message.retain and message.sink == "mqtt" and message.topic.endswith("/paused"):
                self.retained[message.topic] = message.payload
            if message.topic == self._event_topic:
                events.append(message)
            elif message.job_id is not None and message.sink == "mqtt" and self._is_result(message.topic):
                results[message.job_id] = message.payload
        frames = []
        for message in events:
            try:
                body = json.loads(message.payload)
            except ValueError:
                continue
            if not isinstance(body, dict):
                continue
            job_id = body.get("job_id")
            if body.get("type") == "job_done" and job_id in results:
                body["result"] = json.loads(results[job_id])
            frames.append(self._frame(body))
            self._settle(body)
        if frames:
            self._pending.extend(frames)
            if self._flush is None:
                # Frames wait up to FLUSH_EVERY and go out together: during a burst of jobs each
                # open tab gets ten socket writes a second, not three per job.
                self._flush = asyncio.get_running_loop().call_later(FLUSH_EVERY, self._send_pending)

    def _send_pending(self) -> None:
        self._flush = None
        pending, self._pending = self._pending, []
        if pending:
            self._broadcast(b"".join(pending))

    def _frame(self, body: dict[str, Any]) -> bytes:
        self._seq += 1
        self.published += 1
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        frame = f"id: {self._seq}\nevent: {body.get('type', 'event')}\ndata: {data}\n\n".encode()
        self._recent.append((self._seq, frame))
        return frame

    def _broadcast(self, chunk: bytes) -> None:
        for queue in list(self._streams):
            try:
                queue.put_nowait(chunk)
            except asyncio.QueueFull:
                self._drop(queue)

    def _settle(self, body: dict[str, Any]) -> None:
        if body.get("type") in FINAL_EVENTS and body.get("job_id") in self._waiters:
            for future in self._waiters.pop(body["job_id"]):
                if not future.done():
                    future.set_result(body)

    def close(self) -> None:
        """End every open stream (the daemon stops)."""
        if self._flush is not None:
            self._flush.cancel()
            self._send_pending()
        for queue in list(self._streams):
            self._drop(queue)

    def _drop(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._streams.discard(queue)
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()  # room for the end marker
        queue.put_nowait(None)

    async def wait_for(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        """The job's final event, or None when it does not come within `timeout`."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            waiting = self._waiters.get(job_id)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._waiters[job_id]

    async def stream(self, last_event_id: str | None = None) -> AsyncIterator[bytes]:
        """SSE frames for one browser, starting after `last_event_id` when it reconnects."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_SIZE)
        self._streams.add(queue)
        try:
            yield b"retry: 2000\n\n"
            if last_event_id and last_event_id.isdigit():
                after = int(last_event_id)
                for seq, missed in list(self._recent):
                    if seq > after:
                        yield missed
            while True:
                try:
                    async with asyncio.timeout(HEARTBEAT):
                        chunk = await queue.get()
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
                chunks = [chunk]
                while chunks[-1] is not None and not queue.empty():
                    chunks.append(queue.get_nowait())  # whatever else waits goes in the same write
                yield b"".join(c for c in chunks if c is not None)
                if chunks[-1] is None:
                    return
        finally:
            self._streams.discard(queue)
