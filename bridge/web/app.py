"""Putting the console together: its view of the core, its routes, its files."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from bridge.config.http import HttpSettings
from bridge.config.rules import RuleBase
from bridge.config.settings import LimitsSettings
from bridge.extension import Core
from bridge.pipeline.images import ImageSpec
from bridge.pipeline.intake import Submission
from bridge.pipeline.journal import OutboxMessage
from bridge.pipeline.runner import ask_model, image_spec
from bridge.pipeline.topics import Topics
from bridge.web.api import api_router
from bridge.web.console import Console
from bridge.web.events import EventHub
from bridge.web.pages import pages_router
from bridge.web.queries import JournalView
from bridge.web.thumbs import ThumbCache
from handlers import PromptInput, handler_for

HERE = Path(__file__).parent


class CoreView:
    """`ConsoleCore` over the daemon's `Core`."""

    def __init__(self, core: Core, hub: EventHub) -> None:
        self._core = core
        self._hub = hub
        self.rules: Mapping[str, RuleBase] = core.rules
        self.limits: LimitsSettings = core.settings.limits
        self.topics: Topics = core.topics

    def submit(self, submission: Submission) -> str | None:
        return self._core.submit(submission)

    def stats(self) -> dict[str, Any]:
        return self._core.stats_payload()

    async def health(self) -> dict[str, Any]:
        backend = await self._core.backend.health()
        return {"broker": {"connected": self._core.broker_connected()}, "backends": [backend]}

    async def models(self) -> list[str]:
        return sorted(await self._core.backend.models())

    async def ask(self, rule: RuleBase, prompt: PromptInput) -> dict[str, Any]:
        outcome = await ask_model(self._core.backend, handler_for(rule), rule, prompt)
        replies = outcome.replies
        return {
            **outcome.answer.fields,
            "state": outcome.answer.state,
            "model": replies[-1].model,
            "timings": {
                "llm": round(sum(r.wall_ms for r in replies), 1),
                "load": round(sum(r.load_ms for r in replies), 1),
                "eval": round(sum(r.eval_ms for r in replies), 1),
            },
            "tokens": {
                "prompt": sum(r.prompt_tokens for r in replies),
                "eval": sum(r.eval_tokens for r in replies),
            },
            "calls": len(replies),
        }

    def check(self, rule: str) -> None:
        # The message an MQTT user sends (through the outbox, as the control requests do); the
        # cameras feature takes it from the broker.
        self._core.publish([OutboxMessage(self.topics.check(rule), b"", qos=1)])

    def set_paused(self, rule: str, paused: bool) -> None:
        self._core.publish([OutboxMessage(self.topics.paused_set(rule), b"ON" if paused else b"OFF", qos=1)])

    def paused(self, rule: str) -> bool | None:
        found = self.rules.get(rule)
        if found is None or found.schedule is None:
            return None
        return self._hub.retained.get(self.topics.paused(rule)) == b"ON"

    def image_spec(self, rule: RuleBase) -> ImageSpec:
        return image_spec(rule, self.limits)


def build_console(core: Core, settings: HttpSettings) -> Console:
    """The console's state; from here on it sees every committed outbox message."""
    topics = core.topics
    results = {topics.result(name) for name in core.rules}
    hub = EventHub(topics.event, results.__contains__)
    core.tap_outbox(hub.on_messages)
    thumbs = ThumbCache(core.data_dir / "web-thumbs.sqlite3")
    thumbs.prune(core.settings.journal.retention)
    view = JournalView(core.data_dir / "journal.sqlite3")
    return Console(core=CoreView(core, hub), settings=settings, view=view, thumbs=thumbs, hub=hub)


def mount_console(app: FastAPI, console: Console) -> None:
    """The API, the pages and the static files on `app`."""
    app.include_router(api_router(console))
    app.include_router(pages_router(console))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
