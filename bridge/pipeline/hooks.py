"""What the runner asks of the features around each job. `bridge.extension.Extension` implements it."""

from typing import Any, Protocol

from bridge.config.rules import RuleBase
from bridge.pipeline.images import PreparedImage
from bridge.pipeline.journal import Job, OutboxMessage
from handlers.base import Answer, PromptInput


class JobHooks(Protocol):
    """Hooks around one job, in the order the runner calls them."""

    name: str

    def before_model(self, job: Job, rule: RuleBase, image: PreparedImage | None) -> str | None:
        """A reason to skip the model for this job, or None."""

    async def prepare(self, job: Job, rule: RuleBase, prompt: PromptInput) -> PromptInput:
        """The prompt input the model gets."""

    async def after_answer(self, job: Job, rule: RuleBase, prompt: PromptInput, answer: Answer) -> Answer:
        """Act on a valid answer before the job finishes."""

    def owns_state(self, rule: RuleBase) -> bool:
        """True when the hook publishes the rule's state topic itself."""

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        """Extra messages to publish with a finished job, in the same transaction."""

    def after_failed(self, job: Job, error: str) -> list[OutboxMessage]:
        """Extra messages to publish with a failed or dead job."""
