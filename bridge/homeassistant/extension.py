"""Home Assistant: announce rules as entities (MQTT discovery) and keep them fed.

Discovery configs are retained QoS 1 messages, published on every connect and again when
Home Assistant says `online` on its status topic (it does so after each start and each
reconnect to the broker). Config topics that a rule no longer produces get an empty
retained message, which makes Home Assistant remove the entity; the list of published
topics is kept in the data directory so this works across restarts.

The last judged image of each rule is published retained on `<base>/<rule>/image` for the
image entity, and kept on disk with the last result so both can be republished to a
broker that lost its retained messages.
"""

import asyncio
import functools
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from bridge import __version__
from bridge.config.homeassistant import HomeAssistantSettings
from bridge.config.rules import RuleBase
from bridge.extension import Core, Extension
from bridge.homeassistant.discovery import Node, absent_images, discovery, removals
from bridge.homeassistant.kinds import has_image
from bridge.pipeline.images import PreparedImage
from bridge.pipeline.journal import Job, OutboxMessage
from bridge.pipeline.mqtt import Inbound

log = logging.getLogger(__name__)

PUBLISHED_FILE = "discovery_topics.json"


class HomeAssistantExtension(Extension):
    """Publishes discovery, the last images, and republishes states for Home Assistant."""

    name = "homeassistant"

    def __init__(self, settings: HomeAssistantSettings) -> None:
        self.settings = settings
        self._core: Core | None = None
        self._configs: dict[str, bytes] = {}
        self._absent_images: list[str] = []
        self._published: set[str] = set()
        self._images: dict[str, bytes] = {}
        self._results: dict[str, tuple[bytes, str | None]] = {}
        self._folder = Path()
        # One writer thread: writes of the same file happen in the order they were asked for.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ha-writer")

    @property
    def core(self) -> Core:
        assert self._core is not None, "the extension is not started"
        return self._core

    async def start(self, core: Core) -> None:
        self._core = core
        node = Node(core.topics.base, self.settings.discovery_prefix, __version__)
        self._configs = discovery(node, core.rules.values(), core.settings.backend_settings())
        self._absent_images = absent_images(node, core.rules.values())
        self._folder = core.data_dir / "homeassistant"
        await asyncio.to_thread(self._load)
        core.route(self.settings.status_topic, self._on_status)
        log.info(
            "Home Assistant discovery: %d entities under %s/",
            len(self._configs),
            self.settings.discovery_prefix,
        )

    async def stop(self) -> None:
        await asyncio.to_thread(self._writer.shutdown, wait=True)

    def on_connected(self) -> None:
        # Discovery and images are ours alone; results are republished only when Home
        # Assistant asks, so a daemon restart does not repeat results to other subscribers.
        self._announce(states=False)

    def _on_status(self, message: Inbound) -> None:
        if message.payload.strip().lower() == b"online":
            log.info("Home Assistant is online: republishing discovery and states")
            self._announce(states=True)

    def _announce(self, *, states: bool) -> None:
        send = self.core.send
        stale = removals(self._published, self._configs)
        for topic in sorted({*stale, *self._absent_images}):
            send(topic, b"", qos=1, retain=True)
        for topic, payload in self._configs.items():
            send(topic, payload, qos=1, retain=True)
        for name, shown in self.core.rules.items():
            # Home Assistant answers an image entity without a picture with HTTP 500.
            if name not in self._images and has_image(shown) and shown.homeassistant.enabled:
                send(self._image_topic(name), placeholder_image(), qos=1, retain=True)
        for name, image in self._images.items():
            if name in self.core.rules:
                send(self._image_topic(name), image, qos=1, retain=True)
        if states:
            for name, (result, state) in self._results.items():
                rule = self.core.rules.get(name)
                if rule is None or not rule.outputs.retain:
                    continue  # not retained by choice: repeating it would look like a new answer
                send(self.core.topics.result(name), result, qos=1, retain=True)
                if rule.outputs.state and state is not None:
                    send(self.core.topics.rule_state(name), state.encode(), qos=1, retain=True)
        if stale or set(self._configs) != self._published:
            self._published = set(self._configs)
            self._in_background(self._save_published, sorted(self._published))

    def _image_topic(self, rule: str) -> str:
        return self.core.topics.image(rule)

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        payload = json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode()
        self._results[rule.name] = (payload, state)
        self._in_background(self._save_result, rule.name, payload, state)
        if image is None or not rule.homeassistant.enabled:
            return []
        self._images[rule.name] = image.data
        self._in_background(self._save_image, rule.name, image.data)
        return [OutboxMessage(topic=self._image_topic(rule.name), payload=image.data, retain=True)]

    # -- the data directory (in a worker thread) -------------------------------------------

    def _in_background(self, write: Any, *args: Any) -> None:
        self._writer.submit(self._guarded, write, *args)

    @staticmethod
    def _guarded(write: Any, *args: Any) -> None:
        try:
            write(*args)
        except OSError as exc:
            log.warning("could not save Home Assistant state: %s", exc)

    def _load(self) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        listing = self._folder / PUBLISHED_FILE
        try:
            topics = json.loads(listing.read_text("utf-8")) if listing.exists() else []
            self._published = {t for t in topics if isinstance(t, str)}
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): stale entities will not be removed", listing, exc)
        for name in self.core.rules:
            image = self._folder / f"{name}.jpg"
            if image.exists():
                self._images[name] = image.read_bytes()
            last = self._folder / f"{name}.json"
            if last.exists():
                try:
                    saved = json.loads(last.read_text("utf-8"))
                    self._results[name] = (json.dumps(saved["result"]).encode(), saved.get("state"))
                except (OSError, ValueError, KeyError, TypeError):
                    log.warning("%s unreadable: not republished", last)

    def _save_published(self, topics: list[str]) -> None:
        _write_atomic(self._folder / PUBLISHED_FILE, json.dumps(topics, indent=1).encode())

    def _save_result(self, rule: str, payload: bytes, state: str | None) -> None:
        record = {"result": json.loads(payload), "state": state}
        _write_atomic(self._folder / f"{rule}.json", json.dumps(record, ensure_ascii=False).encode())

    def _save_image(self, rule: str, data: bytes) -> None:
        _write_atomic(self._folder / f"{rule}.jpg", data)


@functools.cache
def placeholder_image() -> bytes:
    """A small plain grey JPEG, shown by an image entity until the rule's first job."""
    out = io.BytesIO()
    Image.new("RGB", (160, 120), (200, 200, 200)).save(out, "JPEG", quality=60)
    return out.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_suffix(path.suffix + ".part")
    partial.write_bytes(data)
    partial.replace(path)
