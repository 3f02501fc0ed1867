"""Adds a notification row per matching `notify:` entry to each finished job, and sends them."""

import json
from typing import Any

from bridge.config.notify import NotifyTarget
from bridge.config.rules import RuleBase
from bridge.extension import Core, Extension
from bridge.notify.sink import SINK, AppriseSink, url_digest
from bridge.pipeline.images import PreparedImage
from bridge.pipeline.journal import Job, OutboxMessage
from bridge.pipeline.notification import condition_holds, notification_vars, render_text

_MIME = (
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"\x89PNG", "image/png", "png"),
    (b"RIFF", "image/webp", "webp"),
)


class NotifyExtension(Extension):
    """Notifications through Apprise, written in the transaction that finishes the job."""

    name = "notify"

    def __init__(self) -> None:
        self._core: Core | None = None
        self._sink: AppriseSink | None = None

    async def start(self, core: Core) -> None:
        self._core = core
        targets = {name: rule.notify for name, rule in core.rules.items()}
        self._sink = AppriseSink(targets, core.blob)
        core.add_sink(SINK, self._sink)

    async def stop(self) -> None:
        if self._sink is not None:
            await self._sink.close()

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        if not rule.notify:
            return []
        assert self._core is not None
        previous = self._core.previous_state(rule.name, job.id)
        variables = notification_vars(job, rule, result, state, previous)
        messages = []
        for index, target in enumerate(rule.notify):
            if not condition_holds(target.when, variables, "notify"):
                continue
            title, message = _texts(target, variables)
            body: dict[str, Any] = {
                "rule": rule.name,
                "index": index,
                "url_digest": url_digest(target.url),
                "job_id": job.id,
                "title": title,
                "message": message,
                "attach": self._attachment(target, job, image),
            }
            # No job_id on the row: an SQS job must not wait for a phone to be reachable.
            messages.append(
                OutboxMessage(f"{rule.name}/notify/{index}", json.dumps(body).encode(), sink=SINK)
            )
        return messages

    def _attachment(
        self, target: NotifyTarget, job: Job, image: PreparedImage | None
    ) -> dict[str, str] | None:
        assert self._core is not None
        if target.attach == "picture" and job.image is not None:
            digest = job.image
            head = self._core.blob(digest)[:4]
        elif target.attach != "none" and image is not None:
            # The crop is what the model saw; kept once by content hash like any picture.
            digest, head = self._core.put_blob(image.data), image.data[:4]
        else:
            return None
        mimetype, suffix = next(
            ((m, s) for magic, m, s in _MIME if head.startswith(magic)), ("image/jpeg", "jpg")
        )
        return {"blob": digest, "name": f"{job.rule}-{job.id}.{suffix}", "mimetype": mimetype}


def _texts(target: NotifyTarget, variables: dict[str, Any]) -> tuple[str, str]:
    """Title and message; a template that fails to render falls back to rule and state."""
    try:
        return render_text(target.title, variables), render_text(target.message, variables)
    except Exception:
        fallback = f"{variables['rule']}: {variables['state']}"
        return fallback, fallback
