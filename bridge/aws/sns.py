"""SNS notifications: a rule's results published to topics, when its condition holds.

The messages are outbox rows (sink "sns") written in the same transaction that finishes the
job, so an SNS outage or a crash delays a notification but never loses it. Conditions and
templates are Jinja expressions in a sandbox: they read values and can run no code.
"""

import asyncio
import json
import logging
import re
from dataclasses import replace
from typing import Any

from bridge.aws.clients import AwsContext
from bridge.aws.s3 import PictureUploads
from bridge.aws.sinks import SinkExtension, sns_publisher
from bridge.config.aws import SnsTarget
from bridge.config.rules import RuleBase
from bridge.config.templates import SANDBOX
from bridge.extension import Core
from bridge.pipeline.images import PreparedImage
from bridge.pipeline.journal import Job, OutboxMessage
from bridge.pipeline.notification import condition_holds, notification_vars

log = logging.getLogger(__name__)

SUBJECT_MAX = 99  # SNS: under 100 characters, printable ASCII, one line


def wanted(target: SnsTarget, variables: dict[str, Any]) -> bool:
    """Does the target's `when` hold? A condition that fails to evaluate counts as false."""
    return condition_holds(target.when, variables, "SNS")


def clean_subject(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = text.encode("ascii", "replace").decode()
    return re.sub(r"[^\x20-\x7e]", "?", text)[:SUBJECT_MAX]


def sns_message(
    topic_arn: str, *, subject: str | None, message: str, attributes: dict[str, str], group: str
) -> OutboxMessage:
    payload = {
        "subject": clean_subject(subject) if subject else None,
        "message": message,
        "attributes": {k: v for k, v in attributes.items() if v},
        "group": group,
    }
    return OutboxMessage(topic=topic_arn, payload=json.dumps(payload).encode(), sink="sns")


def render_target(target: SnsTarget, variables: dict[str, Any], result: dict[str, Any]) -> OutboxMessage:
    """The outbox row for one target; a template that fails falls back to the result JSON."""
    default = json.dumps(result, ensure_ascii=False)
    try:
        subject = SANDBOX.from_string(target.subject).render(**variables)
        message = SANDBOX.from_string(target.message).render(**variables) if target.message else default
    except Exception as exc:
        log.warning("%s: SNS template failed (%s); sending the result JSON", variables["rule"], exc)
        subject, message = f"{variables['rule']}: {variables['state']}", default
    attributes = {"rule": variables["rule"], "state": variables["state"] or "", "job_id": variables["job_id"]}
    return sns_message(
        target.topic_arn, subject=subject, message=message, attributes=attributes, group=variables["rule"]
    )


class SnsNotifier(SinkExtension):
    """Adds SNS rows to finished jobs and delivers them through the outbox."""

    name = "sns"
    sink_name = "sns"

    def __init__(self, context: AwsContext) -> None:
        super().__init__(context, lambda aws: sns_publisher(aws, self._upload))
        self._core: Core | None = None
        self._pictures: PictureUploads | None = None

    async def start(self, core: Core) -> None:
        self._core = core
        await super().start(core)
        if self._context.settings.image_bucket and self._aws is not None:
            loop = asyncio.get_running_loop()

            def fetch(digest: str) -> bytes:
                # The journal belongs to the loop: the upload thread asks the loop for the picture.
                return asyncio.run_coroutine_threadsafe(_blob(core, digest), loop).result(timeout=30)

            self._pictures = PictureUploads(self._aws, self._context.settings, fetch)

    def _upload(self, picture: dict[str, str]) -> None:
        if self._pictures is not None:
            self._pictures.ensure(picture)

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        messages: list[OutboxMessage] = []
        if rule.sns:
            assert self._core is not None
            previous = self._core.previous_state(rule.name, job.id)
            variables = notification_vars(job, rule, result, state, previous)
            targets = [t for t in rule.sns if wanted(t, variables)]
            picture = self._picture(job) if targets else None
            if picture is not None:
                variables["image_url"] = picture[1]
                result = {**result, "image_url": picture[1]}
            for target in targets:
                message = render_target(target, variables, result)
                messages.append(_with_picture(message, picture[0]) if picture else message)
        reply = _sns_reply(job)
        if reply:
            attributes = {"rule": rule.name, "state": state or "", "job_id": job.id}
            messages.append(
                sns_message(
                    reply,
                    subject=f"{rule.name}: {state}",
                    message=json.dumps(result, ensure_ascii=False),
                    attributes=attributes,
                    group=rule.name,
                )
            )
        return messages

    def after_failed(self, job: Job, error: str) -> list[OutboxMessage]:
        reply = _sns_reply(job)
        if not reply:
            return []
        body = {"job_id": job.id, "rule": job.rule, "error": error}
        attributes = {"rule": job.rule, "state": "failed", "job_id": job.id}
        return [
            sns_message(
                reply,
                subject=f"{job.rule}: failed",
                message=json.dumps(body, ensure_ascii=False),
                attributes=attributes,
                group=job.rule,
            )
        ]

    def _picture(self, job: Job) -> tuple[dict[str, str], str] | None:
        """Where the job's picture is uploaded and its link, when aws.image_bucket is set."""
        if self._pictures is None or job.image is None:
            return None
        assert self._core is not None
        return self._pictures.link(job.rule, job.id, job.image, self._core.blob(job.image)[:4])


async def _blob(core: Core, digest: str) -> bytes:
    return core.blob(digest)


def _with_picture(message: OutboxMessage, picture: dict[str, str]) -> OutboxMessage:
    """The SNS row, told to put the picture in S3 before it is published."""
    body = {**json.loads(message.payload), "picture": picture}
    return replace(message, payload=json.dumps(body).encode())


def _sns_reply(job: Job) -> str | None:
    reply = job.input.get("reply")
    return reply.get("sns") if isinstance(reply, dict) else None
