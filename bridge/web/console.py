"""What the web console needs from the running bridge, and the state its routes share.

`ConsoleCore` is the whole of what the console may do to the bridge; the web extension
builds it from the daemon's core. Everything else the console knows it reads from the
journal (queries.py) or from the events the journal shows it (events.py).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.config.http import HttpSettings
from bridge.config.rules import RuleBase
from bridge.config.settings import LimitsSettings
from bridge.pipeline.images import ImageSpec
from bridge.pipeline.intake import Submission
from bridge.pipeline.topics import Topics
from bridge.web.events import EventHub
from bridge.web.queries import JournalView
from bridge.web.thumbs import ThumbCache
from handlers import PromptInput


class ConsoleCore(Protocol):
    """The bridge as the console sees it."""

    rules: Mapping[str, RuleBase]
    limits: LimitsSettings
    topics: Topics

    def submit(self, submission: Submission) -> str | None:
        """Queue a job through the intake (journal, queue, outbox); its id, or None for a duplicate."""

    def stats(self) -> dict[str, Any]:
        """bridge/stats: queue depth, running jobs, per-rule counters."""

    async def health(self) -> dict[str, Any]:
        """Broker link and backend: reachable, loaded models."""

    async def models(self) -> list[str]:
        """The models the backend has pulled."""

    async def ask(self, rule: RuleBase, prompt: PromptInput) -> dict[str, Any]:
        """Run `rule` once on `prompt` against the backend; nothing is journaled or published."""

    def check(self, rule: str) -> None:
        """Ask for a snapshot for `rule` now (publishes `<base>/<rule>/check`)."""

    def set_paused(self, rule: str, paused: bool) -> None:
        """Pause or resume the rule's schedule (publishes `<base>/<rule>/paused/set`)."""

    def paused(self, rule: str) -> bool | None:
        """Whether the rule's schedule is paused; None without a schedule."""

    def image_spec(self, rule: RuleBase) -> ImageSpec:
        """How the rule prepares its images for the model."""


@dataclass
class Console:
    """Shared by the routes: the core, the journal reader, the picture cache, the live events."""

    core: ConsoleCore
    settings: HttpSettings
    view: JournalView
    thumbs: ThumbCache
    hub: EventHub
