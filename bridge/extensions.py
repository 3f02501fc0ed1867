"""The seam where features plug into the daemon: schedules, SQS, Home Assistant, Todo.

An `Extension` is started and stopped with the daemon and is told about the broker
connection and about every job's outcome. Extensions never block the event loop.
"""

from typing import TYPE_CHECKING, Any

from bridge.images import PreparedImage
from bridge.journal import Job, OutboxMessage
from bridge.rules import RuleBase
from handlers.base import Answer, PromptInput

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

    async def prepare(self, job: Job, rule: RuleBase, prompt: PromptInput) -> PromptInput:
        """The prompt input the model gets (e.g. with extra template fields); runs after before_model."""
        return prompt

    async def after_answer(self, job: Job, rule: RuleBase, prompt: PromptInput, answer: Answer) -> Answer:
        """Act on a valid answer before the job finishes; may replace it, or raise a bridge error
        (AnswerError, BackendError, BackendUnavailable) to fail or retry the job."""
        return answer

    def owns_state(self, rule: RuleBase) -> bool:
        """True when this extension publishes the rule's state topic itself (confirmed states)."""
        return False

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
    from bridge.control.extension import ControlExtension  # imports this module

    extensions: list[Extension] = [ControlExtension()]
    if bridge.settings.homeassistant.enabled:
        from bridge.ha_extension import HomeAssistantExtension  # imports this module

        extensions.append(HomeAssistantExtension(bridge.settings.homeassistant))
    from bridge import scheduled_checks  # imports this module

    if scheduled_checks.wants_schedules(list(bridge.rules.values())):
        extensions.append(scheduled_checks.ScheduleExtension())
    if any(rule.notify for rule in bridge.rules.values()):
        from bridge.notify.extension import NotifyExtension  # imports this module; apprise when sending

        extensions.append(NotifyExtension())
    from bridge.aws.wiring import aws_extensions  # imports this module; boto3 only when used

    extensions += aws_extensions(bridge)
    http = bridge.settings.http
    # The Todo list (numpy, pykakasi) and the web server (FastAPI) load only when used.
    if http.enabled or any(rule.handler == "todo_match" for rule in bridge.rules.values()):
        from bridge.todo.extension import TodoExtension  # imports this module

        extensions.append(TodoExtension(bridge))
    if http.enabled:
        from bridge.http import HttpExtension  # after the extensions that add routers
        from bridge.http_metrics import metrics_router

        server = HttpExtension(http)
        server.include_router(metrics_router(bridge.metrics.registry))
        extensions.append(server)
    return extensions
