"""Mirroring: results of chosen local rules copied to an outbound SQS queue for the cloud side."""

import json
from typing import TYPE_CHECKING, Any

from bridge.aws.clients import AwsContext
from bridge.aws.sinks import SinkExtension, sqs_sender
from bridge.config.rules import RuleBase
from bridge.pipeline.images import PreparedImage
from bridge.pipeline.journal import Job, OutboxMessage

if TYPE_CHECKING:
    pass


class SqsMirror(SinkExtension):
    """Adds an SQS row (sink "sqs") with the result of each local job of a rule with `mirror_to_sqs`."""

    name = "sqs_mirror"
    sink_name = "sqs"

    def __init__(self, context: AwsContext) -> None:
        super().__init__(context, sqs_sender)

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        # Jobs that came from SQS are the cloud's own; only local work is mirrored.
        if rule.mirror_to_sqs is None or job.source.startswith("sqs:"):
            return []
        body = json.dumps(result, ensure_ascii=False).encode()
        return [OutboxMessage(topic=rule.mirror_to_sqs, payload=body, sink="sqs")]
