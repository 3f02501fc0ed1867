"""SQS as a job source: long polls, heartbeats, and a delete only once the outputs are out.

A received message is held (hidden from other consumers) while its job waits and runs: a
heartbeat extends the visibility of every held message in one batch call per queue, until
the job's deadline, after which the message is let go and returns to the queue. A message is
deleted only after every output of its job (MQTT result, SNS notification) is delivered.
A message that cannot be run (not JSON, unknown rule, missing S3 object, failed job) is
reported on MQTT and left alone: the queue's redrive policy moves it to the dead-letter
queue after its receive count. Dedupe: the body's `id`, else the MessageId, is the job's
dedupe key in the journal, so a message seen again (after a crash, a lapsed visibility)
attaches to its job instead of running twice.
"""

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import deque
from typing import Any

from bridge.aws.clients import AwsClients, AwsContext, AwsError, queue_name
from bridge.aws.held import BATCH, Held, QueueRef, delete_batches, extend_batches
from bridge.aws.message import SqsJob, parse_job_message
from bridge.aws.s3 import fetch_s3_image
from bridge.config.redact import redact_urls_in
from bridge.config.rules import RuleBase
from bridge.errors import InputError
from bridge.extension import Core, Extension
from bridge.pipeline.images import PreparedImage
from bridge.pipeline.intake import Submission
from bridge.pipeline.journal import Job, OutboxMessage
from bridge.pipeline.jsontext import dumps
from bridge.pipeline.payloads import job_input_from_object
from bridge.pipeline.replies import sqs_reply_problem
from bridge.pipeline.results import event, iso

log = logging.getLogger(__name__)

DELETE_WINDOW = 0.05  # seconds: deletes that come due within it share one call


class SqsSource(Extension):
    """Takes jobs from SQS queues; see the module docstring for the guarantees."""

    name = "sqs"

    def __init__(self, context: AwsContext) -> None:
        self._context = context
        self._settings = context.settings
        self._queues = [QueueRef(u, queue_name(u), u.endswith(".fifo")) for u in context.settings.queues]
        self._held: dict[str, Held] = {}  # MessageId -> held message
        self._by_job: dict[str, list[Held]] = {}
        self._groups: dict[tuple[str, str], deque[Held]] = {}  # FIFO (queue, group) -> in order
        self._deletes: dict[QueueRef, list[Held]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._room = asyncio.Event()
        self.counts = {"received": 0, "submitted": 0, "attached": 0, "deleted": 0, "reported": 0}

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, core: Core) -> None:
        self._core = core
        self._aws: AwsClients = await self._context.open()
        slots = sum(backend.parallel for backend in core.settings.backend_settings().values())
        self._limit = self._settings.max_in_flight or 2 * slots
        for queue in self._queues:
            self._spawn(self._receive_loop(queue), f"sqs-receive-{queue.name}")
        self._spawn(self._heartbeat_loop(), "sqs-heartbeat")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._flush_deletes()
        # One line the benchmark reads: messages handled and SQS calls made, by operation.
        log.info(
            "sqs totals %s", json.dumps({"messages": self.counts, "api_calls": dict(self._aws.sqs_calls)})
        )
        self._context.close()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- receiving ----------------------------------------------------------------------

    def free(self) -> int:
        """Messages that may be taken now: only as many as can start soon."""
        busy = sum(1 for h in self._held.values() if h.open)
        local = self._core.load()
        return self._limit - max(busy, local)

    async def _receive_loop(self, queue: QueueRef) -> None:
        await self._check_queue(queue)
        backoff = 1.0
        while True:
            room = self.free()
            # While jobs are held, wait for room for a real batch rather than polling for one.
            busy = any(h.open for h in self._held.values())
            if room <= 0 or (busy and room < min(BATCH, max(1, self._limit // 2))):
                self._room.clear()
                await self._room.wait()
                continue
            try:
                reply: dict[str, Any] = await self._aws.poll(
                    self._aws.sqs.receive_message,
                    QueueUrl=queue.url,
                    MaxNumberOfMessages=min(BATCH, room),
                    WaitTimeSeconds=int(self._settings.wait_time),
                    VisibilityTimeout=int(self._settings.visibility_timeout),
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
                )
            except AwsError as exc:
                log.warning("sqs: receiving from %s failed: %s; again in %.0fs", queue.name, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 1.0
            for message in reply.get("Messages", []):
                self._take(queue, message)

    async def _check_queue(self, queue: QueueRef) -> None:
        try:
            reply = await self._aws.call(
                self._aws.sqs.get_queue_attributes, QueueUrl=queue.url, AttributeNames=["RedrivePolicy"]
            )
        except AwsError as exc:
            log.error("sqs: queue %s is not reachable: %s", queue.url, exc)
            return
        if "RedrivePolicy" not in reply.get("Attributes", {}):
            log.warning(
                "sqs: queue %s has no redrive policy: a message that cannot be run comes back forever",
                queue.name,
            )

    def _take(self, queue: QueueRef, message: dict[str, Any]) -> None:
        attributes = message.get("Attributes", {})
        message_id = message["MessageId"]
        self.counts["received"] += 1
        known = self._held.get(message_id)
        if known is not None:
            # Seen again while held (its visibility lapsed): only the newest receipt is valid.
            known.receipt = message["ReceiptHandle"]
            return
        held = Held(
            queue=queue,
            message_id=message_id,
            receipt=message["ReceiptHandle"],
            body=message.get("Body", ""),
            receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
            group=attributes.get("MessageGroupId") if queue.fifo else None,
            deadline=time.monotonic() + self._settings.job_deadline,
        )
        self._held[message_id] = held
        if held.group is not None:
            # FIFO: one job of a group at a time, in the order SQS gave them.
            waiting = self._groups.setdefault((queue.url, held.group), deque())
            waiting.append(held)
            if len(waiting) > 1:
                return
        self._spawn(self._start(held), f"sqs-job-{message_id}")

    async def _start(self, held: Held) -> None:
        try:
            job = parse_job_message(held.body)
        except InputError as exc:
            self._report(held, None, str(exc))
            return
        rule = self._core.rules.get(job.rule)
        if rule is None:
            known = ", ".join(sorted(self._core.rules)) or "none"
            self._report(held, None, f"unknown rule {job.rule!r}; known rules: {known}", rule_name=job.rule)
            return
        refusal = sqs_reply_problem(job.reply, self._settings.reply_topics) if job.reply else None
        if refusal is not None:
            self._report(held, rule.name, refusal)
            return
        key = job.id or held.message_id
        existing = self._core.find_duplicate(
            rule.name, dedupe_key=key, payload_hash=None, window=float("inf")
        )
        if existing is not None:
            self._attach(held, rule, existing)
            return
        try:
            image = await self._image(job)
            limits = self._core.settings.limits
            parsed = job_input_from_object(
                {**job.data, "id": key}, max_bytes=limits.max_payload, max_text=limits.max_text
            )
        except InputError as exc:
            self._report(held, rule.name, str(exc))
            return
        except AwsError as exc:
            log.warning("sqs: message %s: %s; it returns to the queue", held.message_id, exc)
            self._let_go(held)
            return
        if image is not None:
            parsed = dataclasses.replace(parsed, image=image)
        job_id = self._core.submit(
            Submission(rule=rule.name, source=f"sqs:{held.queue.name}", parsed=parsed, reply=job.reply)
        )
        if job_id is None:  # the same id arrived twice at once; the other copy made the job
            existing = self._core.find_duplicate(
                rule.name, dedupe_key=key, payload_hash=None, window=float("inf")
            )
            if existing is None:
                self._report(held, rule.name, "the job was not accepted")
                return
            self._attach(held, rule, existing)
            return
        self.counts["submitted"] += 1
        self._watch(held, job_id)

    async def _image(self, job: SqsJob) -> bytes | None:
        if job.s3 is None:
            return None
        bucket, key = job.s3
        return await fetch_s3_image(
            self._aws, bucket, key, allowed=self._settings.buckets, max_bytes=self._settings.max_image
        )

    def _attach(self, held: Held, rule: RuleBase, job_id: str) -> None:
        """The message's job exists already: wait for it, delete now, or leave the message."""
        self.counts["attached"] += 1
        job = self._core.job(job_id)
        state = job.state if job is not None else "missing"
        if state in ("queued", "running"):
            self._watch(held, job_id)
        elif state in ("done", "skipped", "superseded"):
            self._core.when_delivered(job_id, lambda: self._delete(held))
        else:
            error = job.error if job is not None else None
            self._report(held, rule.name, f"its job {job_id} is {state}: {error}")

    def _watch(self, held: Held, job_id: str) -> None:
        held.job_id = job_id
        self._by_job.setdefault(job_id, []).append(held)

    # -- job outcomes (hooks) -------------------------------------------------------------

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        held = self._by_job.pop(job.id, None)
        if held:
            # The job's rows are written right after this hook returns; look for them after that.
            core = self._core

            def delete_all() -> None:
                for message in held:
                    self._delete(message)

            asyncio.get_running_loop().call_soon(lambda: core.when_delivered(job.id, delete_all))
        return []

    def after_failed(self, job: Job, error: str) -> list[OutboxMessage]:
        for held in self._by_job.pop(job.id, []):
            # Reported on <rule>/error by the worker; the queue's redrive policy decides the rest.
            log.warning(
                "sqs: job %s of message %s failed; the message is left for the queue's redrive policy",
                job.id,
                held.message_id,
            )
            self._let_go(held, failed=True)
        return []

    # -- letting go: delete, or leave for the queue ------------------------------------------

    def _report(self, held: Held, rule: str | None, error: str, *, rule_name: str | None = None) -> None:
        """A message that cannot run: said on MQTT and in the log, then left to the queue."""
        self.counts["reported"] += 1
        topics = self._core.topics
        now = time.time()
        name = rule or rule_name
        log.warning(
            "sqs: message %s from %s cannot run (received %d times): %s; left for the redrive policy",
            held.message_id,
            held.queue.name,
            held.receive_count,
            error,
        )
        summary = {
            "source": f"sqs:{held.queue.name}",
            "message_id": held.message_id,
            "receive_count": held.receive_count,
            "head": redact_urls_in(held.body[:80]),
        }
        messages = []
        if rule is not None:
            body = {"job_id": None, "rule": rule, "error": error, "input": summary, "ts": iso(now)}
            messages.append(OutboxMessage(topic=topics.error(rule), payload=dumps(body)))
        messages.append(event(topics, "job_failed", None, name, now, error=error, **summary))
        self._core.publish(messages)
        self._let_go(held, failed=True)

    def _let_go(self, held: Held, *, failed: bool = False) -> None:
        """Stop holding a message (no more heartbeats); a later one of its FIFO group may start."""
        if self._held.pop(held.message_id, None) is None:
            return
        held.open = False
        self._room.set()
        if held.group is None:
            return
        key = (held.queue.url, held.group)
        waiting = self._groups.get(key)
        if not waiting:
            return
        with contextlib.suppress(ValueError):
            waiting.remove(held)
        if failed:
            # FIFO: what came after a failed message must not overtake it; SQS gives it all back.
            for later in list(waiting):
                self._held.pop(later.message_id, None)
                later.open = False
            waiting.clear()
        if waiting:
            nxt = waiting[0]
            self._spawn(self._start(nxt), f"sqs-job-{nxt.message_id}")
        else:
            del self._groups[key]

    def _delete(self, held: Held) -> None:
        if not self._deletes:
            # One DeleteMessageBatch for all that become deletable within DELETE_WINDOW.
            asyncio.get_running_loop().call_later(
                DELETE_WINDOW, lambda: self._spawn(self._flush_deletes(), "sqs-delete")
            )
        self._deletes.setdefault(held.queue, []).append(held)
        self._let_go(held)

    async def _flush_deletes(self) -> None:
        deletes, self._deletes = self._deletes, {}
        self.counts["deleted"] += await delete_batches(self._aws, deletes)

    # -- heartbeat ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat)
            await self.heartbeat()

    async def heartbeat(self) -> None:
        """Extend every held message, in one batch call per ten; let go of those past their deadline."""
        now = time.monotonic()
        per_queue: dict[QueueRef, list[Held]] = {}
        for held in list(self._held.values()):
            if now >= held.deadline:
                log.warning(
                    "sqs: message %s (job %s) passed aws.job_deadline; it returns to the queue",
                    held.message_id,
                    held.job_id,
                )
                self._let_go(held)
                continue
            per_queue.setdefault(held.queue, []).append(held)
        await extend_batches(self._aws, per_queue, self._settings.visibility_timeout, now)
