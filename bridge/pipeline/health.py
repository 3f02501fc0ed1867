"""bridge/health and bridge/models: what the broker link and the backends are doing, retained.

Reachability changes are published at once; everything else (in flight, latency, loaded
models) rides on the housekeeping round when it changed. Both are snapshots that the next one
replaces, so they go straight to the link, not through the outbox.
"""

import asyncio
import json
import time
from typing import Any

from bridge.config.settings import MqttSettings
from bridge.pipeline.backend_pool import BackendPool
from bridge.pipeline.mqtt import MqttLink
from bridge.pipeline.results import iso
from bridge.pipeline.topics import Topics

# Seconds between /api/ps calls while no model call happens: how soon a backend that leaves while
# idle shows as unreachable on bridge/health (one small GET per backend; Ollama answers it at once).
MODELS_EVERY = 10.0


class HealthReporter:
    """Publishes bridge/health and bridge/models for one daemon."""

    def __init__(self, link: MqttLink, pool: BackendPool, topics: Topics, mqtt: MqttSettings) -> None:
        self._link, self._pool, self._topics, self._mqtt = link, pool, topics, mqtt
        self._last_health = b""
        self._last_models = b""
        self._models_calls = -1
        self._models_at = 0.0

    def payload(self) -> dict[str, Any]:
        """bridge/health: the broker link and each backend."""
        link = self._link
        return {
            "broker": {
                "url": self._mqtt.safe_url(),
                "connected": link.connected,
                "since": iso(link.since) if link.since is not None else None,
            },
            "backends": self._pool.payload(),
            "held": self._pool.held,
        }

    def changed(self) -> None:
        """A backend came or went: say so now, not at the next housekeeping round."""
        asyncio.get_running_loop().call_soon(self.publish)

    def on_connected(self) -> None:
        self._last_health = b""  # the broker may have lost the retained copy
        self.publish()

    def publish(self) -> None:
        payload = json.dumps(self.payload(), sort_keys=True).encode()
        if payload != self._last_health and self._link.connected:
            self._link.publish(self._topics.health, payload, qos=1, retain=True)
            self._last_health = payload

    async def refresh_models(self) -> None:
        """bridge/models: what the backends have loaded, after model calls and every MODELS_EVERY."""
        calls = sum(health.calls for health in self._pool.health.values())
        if calls == self._models_calls and time.monotonic() - self._models_at < MODELS_EVERY:
            return
        self._models_calls, self._models_at = calls, time.monotonic()
        await self._pool.refresh()  # a backend that left while idle is noticed here too
        payload = json.dumps(self._pool.loaded_models()).encode()
        if payload != self._last_models and self._link.connected:
            self._link.publish(self._topics.models, payload, qos=1, retain=True)
            self._last_models = payload
