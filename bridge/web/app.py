"""Putting the console together: its view of the daemon, its routes, its files."""

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from bridge.config import LimitsSettings
from bridge.errors import BackendError
from bridge.http_settings import HttpSettings
from bridge.images import ImageSpec
from bridge.intake import Submission
from bridge.mqtt import Inbound
from bridge.rules import RuleBase
from bridge.topics import Topics
from bridge.web.api import api_router
from bridge.web.console import Console
from bridge.web.events import EventHub
from bridge.web.pages import pages_router
from bridge.web.queries import JournalView
from bridge.web.thumbs import ThumbCache
from bridge.worker import ask_model, image_spec
from handlers import PromptInput, handler_for

if TYPE_CHECKING:
    from bridge.daemon import Bridge

HERE = Path(__file__).parent
HEALTH_TTL = 5.0


class BridgeCore:
    """`ConsoleCore` over the running daemon."""

    def __init__(self, bridge: "Bridge", hub: EventHub) -> None:
        self._bridge = bridge
        self._hub = hub
        self.rules: Mapping[str, RuleBase] = bridge.rules
        self.limits: LimitsSettings = bridge.settings.limits
        self.topics: Topics = bridge.topics
        self._health: tuple[float, dict[str, Any]] = (0.0, {})

    def submit(self, submission: Submission) -> str | None:
        return self._bridge.submit(submission)

    def stats(self) -> dict[str, Any]:
        return self._bridge.stats_payload()

    async def health(self) -> dict[str, Any]:
        at, backend = self._health
        if time.monotonic() - at > HEALTH_TTL:
            try:
                backend = {"reachable": True, "loaded": sorted(await self._bridge.backend.loaded())}
            except BackendError as exc:
                backend = {"reachable": False, "error": str(exc), "loaded": []}
            self._health = (time.monotonic(), backend)
        return {
            "broker": {"connected": self._bridge.link.connected},
            "backends": [{"name": "ollama", **backend}],
        }

    async def models(self) -> list[str]:
        return sorted(await self._bridge.backend.models())

    async def ask(self, rule: RuleBase, prompt: PromptInput) -> dict[str, Any]:
        outcome = await ask_model(self._bridge.backend, handler_for(rule), rule, prompt)
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

    def _deliver(self, topic: str, payload: bytes) -> None:
        # As if the message had come from the broker, to the feature that listens on it.
        self._bridge.deliver_local(Inbound(topic=topic, payload=payload, qos=0, mid=0, retain=False))

    def check(self, rule: str) -> None:
        self._deliver(self.topics.check(rule), b"")

    def set_paused(self, rule: str, paused: bool) -> None:
        self._deliver(self.topics.paused_set(rule), b"ON" if paused else b"OFF")

    def paused(self, rule: str) -> bool | None:
        found = self.rules.get(rule)
        if found is None or found.schedule is None:
            return None
        return self._hub.retained.get(self.topics.paused(rule)) == b"ON"

    def image_spec(self, rule: RuleBase) -> ImageSpec:
        return image_spec(rule, self.limits)


def build_console(bridge: "Bridge", settings: HttpSettings) -> Console:
    """The console's state; from here on it sees every committed outbox message."""
    topics = bridge.topics
    hub = EventHub(topics.event, lambda topic: topic.endswith("/result") and topic.startswith(topics.base))
    bridge.journal.tap_messages(hub.on_messages)
    data_dir = bridge.config.data_dir
    thumbs = ThumbCache(data_dir / "web-thumbs.sqlite3")
    thumbs.prune(bridge.settings.journal.retention)
    view = JournalView(data_dir / "journal.sqlite3")
    return Console(core=BridgeCore(bridge, hub), settings=settings, view=view, thumbs=thumbs, hub=hub)


def mount_console(app: FastAPI, console: Console) -> None:
    """The API, the pages and the static files on `app`."""
    app.include_router(api_router(console))
    app.include_router(pages_router(console))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
