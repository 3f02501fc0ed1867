"""Safe on a home network with producers in the cloud: the real daemon, broker and stand-ins."""

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.aws_helpers import moto_server
from tests.camera import Camera
from tests.conftest import LOCK_RULE, TOPIC_RULE
from tests.mqtt_helpers import Collector, Daemon
from tests.ollama_standin import OllamaStandin
from tests.samples import jpeg

pytestmark = pytest.mark.broker

NOT_ALLOWED = "image_url is not allowed (see image_url.allow in config.yaml)"


@pytest.fixture
def camera() -> Iterator[Camera]:
    server = Camera(jpeg(235))
    yield server
    server.close()


def _online(daemon: Callable[..., Daemon], collector: Collector, *args: Any, **kw: Any) -> Daemon:
    process = daemon(*args, **kw)
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    return process


def test_image_url_is_refused_until_the_config_allows_it(
    daemon, collector: Collector, camera: Camera, ollama: OllamaStandin
) -> None:
    _online(daemon, collector)
    collector.publish("llm2mqtt/front_door_lock/run", json.dumps({"image_url": camera.url}))
    error = collector.wait_for("llm2mqtt/front_door_lock/error")[0].json()
    assert error["error"] == NOT_ALLOWED
    assert camera.hits == 0
    assert not ollama.requests


def test_a_listed_host_name_does_not_reach_loopback(
    daemon, collector: Collector, camera: Camera, ollama: OllamaStandin
) -> None:
    process = _online(daemon, collector, image_url={"allow": ["localhost"]})
    url = camera.url.replace("127.0.0.1", "localhost")
    collector.publish("llm2mqtt/front_door_lock/run", json.dumps({"image_url": url}))
    error = collector.wait_for("llm2mqtt/front_door_lock/error")[0].json()
    assert error["error"] == NOT_ALLOWED
    assert camera.hits == 0
    process.stop()
    assert "is not allowed by image_url.allow" in process.output()


@pytest.mark.aws
def test_sqs_image_urls_follow_the_same_allow_list(
    daemon, collector: Collector, camera: Camera, ollama: OllamaStandin
) -> None:
    with moto_server() as moto:
        queue, _ = moto.queue()
        aws = {"endpoint_url": moto.url, "region": "us-east-1", "queue_url": queue, "wait_time": 1}
        _online(daemon, collector, [LOCK_RULE], aws=aws)
        moto.send(queue, {"rule": "front_door_lock", "id": "cloud-1", "image": camera.url})
        error = collector.wait_for("llm2mqtt/front_door_lock/error")[0].json()
        assert error["error"] == NOT_ALLOWED
        assert camera.hits == 0


def test_a_slow_image_url_fails_at_its_deadline_outside_the_model_slot(
    daemon, collector: Collector, camera: Camera, ollama: OllamaStandin
) -> None:
    """A server sending a byte a second holds a fetch, never the only model slot."""
    _online(daemon, collector, ollama={"parallel": 1}, image_url={"allow": ["127.0.0.1"], "timeout": 3})
    camera.mode = "trickle"
    started = time.monotonic()
    collector.publish("llm2mqtt/front_door_lock/run", json.dumps({"image_url": camera.url}))
    time.sleep(0.3)  # the fetch has begun
    collector.publish("llm2mqtt/message_topic/run", "the milk is gone")
    collector.wait_for("llm2mqtt/message_topic/result", timeout=10)
    assert time.monotonic() - started < 2.5  # not behind the 3 s fetch
    error = collector.wait_for("llm2mqtt/front_door_lock/error", timeout=10)[0].json()
    assert error["error"] == "could not fetch the image_url"
    assert time.monotonic() - started < 6


def test_a_fetched_image_url_is_judged(
    daemon, collector: Collector, camera: Camera, ollama: OllamaStandin
) -> None:
    _online(daemon, collector, [LOCK_RULE, TOPIC_RULE], image_url={"allow": ["127.0.0.0/8"]})
    collector.publish("llm2mqtt/front_door_lock/run", json.dumps({"image_url": camera.url}))
    result = collector.wait_for("llm2mqtt/front_door_lock/result")[0].json()
    assert result["state"] == "locked"
    assert ollama.requests[0].brightness[0] > 200
