"""Outbox sinks that deliver rows to AWS (SNS publish, SQS send), retrying until accepted.

A row stays in the outbox table until its sink accepts it, so a failure, an outage or a
crash only delays it. Errors that no retry can fix (an invalid parameter) are logged and the
row is dropped, so it cannot hold the rest back forever.
"""

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from bridge.aws.clients import AwsClients, AwsContext, AwsError
from bridge.extension import Core, Extension
from bridge.pipeline.journal import OutboxMessage
from bridge.pipeline.retry import Backoff, send_until_accepted

log = logging.getLogger(__name__)


class RetryingSink:
    """Delivers rows with `deliver` on a few concurrent workers; backs off on failure."""

    def __init__(
        self,
        name: str,
        deliver: Callable[[OutboxMessage], None],
        aws: AwsClients,
        *,
        workers: int = 4,
        first_delay: float = 0.5,
        max_delay: float = 30.0,
    ) -> None:
        self.name = name
        self._deliver = deliver
        self._aws = aws
        self._queue: asyncio.Queue[tuple[OutboxMessage, Callable[[int], None]]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._count = workers
        self._backoff = Backoff(first_delay, max_delay)

    def send(self, row: OutboxMessage, done: Callable[[int], None]) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"{self.name}-sink-{i}") for i in range(self._count)
            ]
        self._queue.put_nowait((row, done))

    async def _work(self) -> None:
        while True:
            row, done = await self._queue.get()
            await send_until_accepted(
                functools.partial(self._aws.call, self._deliver, row=row),
                refused=AwsError,
                what=f"{self.name}: a message to {row.topic}",
                backoff=self._backoff,
            )
            done(row.id)

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []


def sns_publisher(
    aws: AwsClients, upload: Callable[[dict[str, str]], None] | None = None
) -> Callable[[OutboxMessage], None]:
    """Publish an SNS row: payload is {"subject", "message", "attributes", "group"}, and
    "picture" ({"bucket", "key", "blob"}) when the message links to a picture `upload` puts first."""

    def deliver(row: OutboxMessage) -> None:
        body: dict[str, Any] = json.loads(row.payload)
        if body.get("picture") and upload is not None:
            upload(body["picture"])
        request: dict[str, Any] = {"TopicArn": row.topic, "Message": body["message"]}
        if body.get("subject"):
            request["Subject"] = body["subject"]
        if body.get("attributes"):
            request["MessageAttributes"] = {
                name: {"DataType": "String", "StringValue": value}
                for name, value in body["attributes"].items()
            }
        if row.topic.endswith(".fifo"):
            request["MessageGroupId"] = body.get("group") or "llm2mqtt"
            request["MessageDeduplicationId"] = f"{row.job_id or ''}-{row.id}"[-128:]
        aws.sns.publish(**request)

    return deliver


def sqs_sender(aws: AwsClients) -> Callable[[OutboxMessage], None]:
    """Send an SQS row: the topic is the queue URL, the payload the body."""

    def deliver(row: OutboxMessage) -> None:
        request: dict[str, Any] = {"QueueUrl": row.topic, "MessageBody": row.payload.decode()}
        if row.topic.endswith(".fifo"):
            # One group per rule keeps each rule's results in order.
            request["MessageGroupId"] = str(json.loads(row.payload).get("rule") or "llm2mqtt")
            request["MessageDeduplicationId"] = (row.job_id or str(row.id))[-128:]
        aws.sqs.send_message(**request)

    return deliver


class SinkExtension(Extension):
    """An extension that owns one outbox sink: opened on start, closed on stop."""

    sink_name = "sink"

    def __init__(
        self, context: AwsContext, make_sender: Callable[[AwsClients], Callable[[OutboxMessage], None]]
    ) -> None:
        self._context = context
        self._make_sender = make_sender
        self._sink: RetryingSink | None = None
        self._aws: AwsClients | None = None

    async def start(self, core: Core) -> None:
        aws = self._aws = await self._context.open()
        self._sink = RetryingSink(self.name, self._make_sender(aws), aws)
        core.add_sink(self.sink_name, self._sink)

    async def stop(self) -> None:
        if self._sink is not None:
            await self._sink.close()
        self._context.close()
