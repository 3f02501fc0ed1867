"""Mirroring: results of chosen local rules copied to an outbound SQS queue for the cloud side."""

import json
from typing import TYPE_CHECKING, Any

from bridge.aws.clients import AwsContext
from bridge.aws.sinks import RetryingSink, sqs_sender
from bridge.extensions import Extension
from bridge.images import PreparedImage
from bridge.journal import Job, OutboxMessage
from bridge.rules import RuleBase

if TYPE_CHECKING:
    from bridge.daemon import Bridge


class SqsMirror(Extension):
    """Adds an SQS row (sink "sqs") with the result of each local job of a rule with `mirror_to_sqs`."""

    name = "sqs_mirror"

    def __init__(self, context: AwsContext) -> None:
        self._context = context
        self._sink: RetryingSink | None = None

    async def start(self, bridge: "Bridge") -> None:
        aws = await self._context.open()
        self._sink = RetryingSink("sqs-mirror", sqs_sender(aws), aws)
        bridge.outbox.add_sink("sqs", self._sink)

    async def stop(self) -> None:
        if self._sink is not None:
            await self._sink.close()
        self._context.close()

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        # Jobs that came from SQS are the cloud's own; only local work is mirrored.
        if rule.mirror_to_sqs is None or job.source.startswith("sqs:"):
            return []
        body = json.dumps(result, ensure_ascii=False).encode()
        return [OutboxMessage(topic=rule.mirror_to_sqs, payload=body, sink="sqs")]
