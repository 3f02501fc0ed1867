"""The seam where features plug into the daemon: schedules, SQS, Home Assistant, Todo.

An `Extension` is started and stopped with the daemon and is told about the broker
connection and about every job's outcome. Extensions never block the event loop.
"""

from typing import TYPE_CHECKING, Any

from bridge.images import PreparedImage
from bridge.journal import Job, OutboxMessage
from bridge.rules import RuleBase

if TYPE_CHECKING:
    from bridge.daemon import Bridge


class Extension:
    """Base class with do-nothing hooks; override what the feature needs."""

    name = "extension"

    async def start(self, bridge: "Bridge") -> None:
        """Called once the journal, queue, outbox and link exist, before the broker connects."""

    async def stop(self) -> None:
        """Called when the daemon stops, after the workers are done, before the link closes."""

    def on_connected(self) -> None:
        """The broker connection is (re)established."""

    def before_model(self, job: Job, rule: RuleBase, image: PreparedImage | None) -> str | None:
        """A reason to skip the model for this job (the job is then `skipped`), or None."""
        return None

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        """Extra messages to publish with a finished job, in the same transaction."""
        return []

    def after_failed(self, job: Job, error: str) -> list[OutboxMessage]:
        """Extra messages to publish with a failed or dead job."""
        return []


def build_extensions(bridge: "Bridge") -> list[Extension]:
    """The extensions the configuration asks for. Each feature adds its line here."""
    extensions: list[Extension] = []
    return extensions
