"""Messages the SQS source holds hidden while their jobs run, and the batch calls that delete
or extend them (at most ten entries a call, as SQS allows)."""

import logging
from dataclasses import dataclass

from bridge.aws.clients import AwsClients, AwsError

log = logging.getLogger(__name__)

BATCH = 10  # the most SQS returns, deletes or extends in one call


@dataclass(frozen=True)
class QueueRef:
    url: str
    name: str
    fifo: bool


@dataclass(eq=False)
class Held:
    """A received message the bridge keeps hidden until its job's outputs are delivered."""

    queue: QueueRef
    message_id: str
    receipt: str
    body: str
    receive_count: int
    group: str | None
    deadline: float  # monotonic: no more heartbeats after this
    job_id: str | None = None
    open: bool = True  # still counts against capacity


async def delete_batches(aws: AwsClients, deletes: dict[QueueRef, list[Held]]) -> int:
    """Delete the messages, ten a call; how many SQS deleted. Failures only come back later."""
    deleted = 0
    for queue, helds in deletes.items():
        for start in range(0, len(helds), BATCH):
            chunk = helds[start : start + BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": h.receipt} for i, h in enumerate(chunk)]
            try:
                reply = await aws.call(aws.sqs.delete_message_batch, QueueUrl=queue.url, Entries=entries)
            except AwsError as exc:
                log.warning("sqs: deleting %d message(s) failed: %s; they will come back", len(chunk), exc)
                continue
            deleted += len(reply.get("Successful", []))
            for failure in reply.get("Failed", []):
                # A lapsed receipt: the message comes back, attaches to its done job and goes then.
                log.info("sqs: delete of %s failed: %s", chunk[int(failure["Id"])].message_id, failure)
    return deleted


async def extend_batches(
    aws: AwsClients, per_queue: dict[QueueRef, list[Held]], visibility: float, now: float
) -> None:
    """Keep the messages hidden for `visibility` more seconds, but never past their deadline."""
    for queue, helds in per_queue.items():
        for start in range(0, len(helds), BATCH):
            chunk = helds[start : start + BATCH]
            entries = [
                {
                    "Id": str(i),
                    "ReceiptHandle": h.receipt,
                    # Never hidden past the deadline: a stuck job's message comes back on time.
                    "VisibilityTimeout": max(1, int(min(visibility, h.deadline - now))),
                }
                for i, h in enumerate(chunk)
            ]
            try:
                await aws.call(aws.sqs.change_message_visibility_batch, QueueUrl=queue.url, Entries=entries)
            except AwsError as exc:
                log.warning("sqs: heartbeat for %d message(s) failed: %s", len(chunk), exc)
