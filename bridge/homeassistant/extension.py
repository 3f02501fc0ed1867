"""Home Assistant: announce rules as entities (MQTT discovery) and keep them fed.

Discovery configs are retained QoS 1 messages, published on every connect and again when
Home Assistant says `online` on its status topic (it does so after each start and each
reconnect to the broker). Config topics that a rule no longer produces get an empty
retained message, which makes Home Assistant remove the entity; the list of published
topics is kept in the data directory so this works across restarts.

The last judged image of each rule is published retained on `<base>/<rule>/image` for the
image entity, with the job's other messages. To feed a broker that lost its retained
messages, the last result and image of each rule are read back from the journal, which
holds them anyway (the image as the job's input, prepared again the same way), so a job
costs this extension no work of its own beyond that one message.
"""

import asyncio
import functools
import io
import json
import logging
from pathlib import Path
from typing import Any

from PIL import Image

from bridge import __version__
from bridge.config.homeassistant import HomeAssistantSettings
from bridge.config.rules import RuleBase
from bridge.extension import Core, Extension
from bridge.homeassistant.discovery import Node, absent_images, discovery, removals
from bridge.homeassistant.kinds import has_image
from bridge.pipeline.images import PreparedImage, prepare_image
from bridge.pipeline.journal import Job, OutboxMessage
from bridge.pipeline.jsontext import dumps
from bridge.pipeline.mqtt import Inbound
from bridge.pipeline.runner import image_spec

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
        self._folder = Path()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def core(self) -> Core:
        assert self._core is not None, "the extension is not started"
        return self._core

    async def start(self, core: Core) -> None:
        self._core = core
        quiet = core.settings.mqtt.quiet_events  # Home Assistant is offered only what is published
        node = Node(core.topics.base, self.settings.discovery_prefix, __version__, quiet)
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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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
        if stale or set(self._configs) != self._published:
            self._published = set(self._configs)
            listing = json.dumps(sorted(self._published), indent=1).encode()
            self._in_background(_write_atomic(self._folder / PUBLISHED_FILE, listing))
        self._in_background(self._republish(states=states))

    async def _republish(self, *, states: bool) -> None:
        """The last image of each rule and (`states`) its last result, from the journal."""
        core = self.core
        for rule in core.rules.values():
            last = core.last_done(rule.name)
            shows_image = rule.homeassistant.enabled and has_image(rule)
            if shows_image and (last is None or last.image is None):
                # Home Assistant answers an image entity without a picture with HTTP 500.
                core.send(self._image_topic(rule.name), placeholder_image(), qos=1, retain=True)
            if last is None or last.result is None:
                continue
            if shows_image and last.image is not None:
                spec = image_spec(rule, core.settings.limits)
                try:
                    image = await asyncio.to_thread(prepare_image, core.blob(last.image), spec)
                except Exception as exc:  # one unreadable image must not stop the others
                    log.warning("%s: last image not republished: %s", rule.name, exc)
                else:
                    core.send(self._image_topic(rule.name), image.data, qos=1, retain=True)
            if not states or not rule.outputs.retain:
                continue  # not retained by choice: repeating it would look like a new answer
            core.send(core.topics.result(rule.name), dumps(last.result), qos=1, retain=True)
            state = last.result.get("state")
            if rule.outputs.state and state is not None:
                core.send(core.topics.rule_state(rule.name), str(state).encode(), qos=1, retain=True)

    def _image_topic(self, rule: str) -> str:
        return self.core.topics.image(rule)

    def after_done(
        self, job: Job, rule: RuleBase, result: dict[str, Any], state: str | None, image: PreparedImage | None
    ) -> list[OutboxMessage]:
        if image is None or not rule.homeassistant.enabled or not has_image(rule):
            return []
        return [OutboxMessage(topic=self._image_topic(rule.name), payload=image.data, retain=True)]

    def _in_background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _load(self) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        listing = self._folder / PUBLISHED_FILE
        try:
            topics = json.loads(listing.read_text("utf-8")) if listing.exists() else []
            self._published = {t for t in topics if isinstance(t, str)}
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): stale entities will not be removed", listing, exc)


@functools.cache
def placeholder_image() -> bytes:
    """A small plain grey JPEG, shown by an image entity until the rule's first job."""
    out = io.BytesIO()
    Image.new("RGB", (160, 120), (200, 200, 200)).save(out, "JPEG", quality=60)
    return out.getvalue()


async def _write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (in a worker thread); a failure is logged, not raised."""

    def write() -> None:
        partial = path.with_suffix(path.suffix + ".part")
        partial.write_bytes(data)
        partial.replace(path)

    try:
        await asyncio.to_thread(write)
    except OSError as exc:
        log.warning("could not save the list of Home Assistant entities: %s", exc)
