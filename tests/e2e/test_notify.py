"""Notifications through Apprise: a real daemon, broker and stand-in, and a local HTTP receiver as target."""

import base64
import io
import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from tests.conftest import LOCK_RULE
from tests.support.mqtt_helpers import Collector, Daemon
from tests.support.notify_receiver import Receiver
from tests.support.samples import jpeg

pytestmark = pytest.mark.broker


def brightness(data: bytes) -> float:
    with Image.open(io.BytesIO(data)) as image:
        return float(ImageStat.Stat(image.convert("L")).mean[0])


def rule_notifying(*targets: dict[str, Any]) -> dict[str, Any]:
    return {**LOCK_RULE, "notify": list(targets)}


def online(collector: Collector, count: int = 1) -> None:
    collector.wait_for("llm2mqtt/bridge/state", count, where=lambda m: m.json() == {"state": "online"})


def test_json_target_gets_title_message_and_the_picture_when_the_condition_holds(
    daemon: Callable[..., Daemon], collector: Collector
) -> None:
    with Receiver() as receiver:
        target = {"url": f"json://127.0.0.1:{receiver.port}/hook", "when": "state == 'unlocked'"}
        daemon([rule_notifying(target)])
        online(collector)
        collector.publish("cameras/front_door/snapshot", jpeg(220))  # locked: no notification
        collector.publish("cameras/front_door/snapshot", jpeg(40, size=(800, 600)))
        collector.wait_for("llm2mqtt/front_door_lock/result", 2)
        [sent] = receiver.wait_accepted(1)
        time.sleep(0.5)
        assert len(receiver.requests) == 1
    body = json.loads(sent.body)
    assert body["title"] == "front_door_lock: unlocked"
    assert body["message"] == "front_door_lock is unlocked (90% sure)"
    [attachment] = body["attachments"]
    picture = base64.b64decode(attachment["base64"])
    assert attachment["mimetype"] == "image/jpeg"
    assert Image.open(io.BytesIO(picture)).size == (800, 600)  # the picture as received
    assert abs(brightness(picture) - 40) < 3


def test_ntfy_target_gets_the_crop_and_a_failing_target_is_retried_and_sent_once(
    daemon: Callable[..., Daemon], collector: Collector
) -> None:
    with Receiver() as receiver:
        receiver.fail_next = 2
        target = {
            "url": f"ntfy://127.0.0.1:{receiver.port}/front-door",
            "attach": "crop",
            "title": "{{ rule }} {{ previous_state }} → {{ state }}",
            "message": "job {{ job_id }}",
        }
        daemon([rule_notifying(target)])
        online(collector)
        collector.publish("cameras/front_door/snapshot", jpeg(200, size=(1024, 768)))
        result = collector.wait_for("llm2mqtt/front_door_lock/result")[0].json()
        [sent] = receiver.wait_accepted(1)
        time.sleep(0.5)
        assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert sent.method in ("POST", "PUT")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(sent.path).query))
    assert query["title"] == "front_door_lock None → locked"
    assert query["message"] == f"job {result['job_id']}"
    assert Image.open(io.BytesIO(sent.body)).size == (256, 192)  # what the model saw (max_side 256)


def test_a_notification_waits_in_the_outbox_across_a_restart_and_is_sent_once(
    daemon: Callable[..., Daemon], collector: Collector, tmp_path: Path
) -> None:
    receiver = Receiver()
    receiver.start()
    port = receiver.port
    receiver.stop()  # the target is down while the job finishes
    process = daemon([rule_notifying({"url": f"json://127.0.0.1:{port}/hook", "attach": "none"})])
    online(collector)
    collector.publish("cameras/front_door/snapshot", jpeg(220))
    collector.wait_for("llm2mqtt/front_door_lock/result")
    deadline = time.monotonic() + 15
    while "retrying" not in process.output() and time.monotonic() < deadline:
        time.sleep(0.1)  # a first attempt fails
    assert "retrying" in process.output()
    assert process.stop() == 0
    with Receiver(port) as receiver:
        process.start()
        online(collector, 2)
        [sent] = receiver.wait_accepted(1)
        time.sleep(1.0)
        assert len(receiver.requests) == 1
        assert process.stop() == 0
        process.start()  # delivered rows are gone: nothing is sent again
        online(collector, 3)
        time.sleep(1.0)
        assert len(receiver.requests) == 1
    assert json.loads(sent.body)["title"] == "front_door_lock: locked"


def test_notify_entries_are_validated_and_their_urls_never_shown(
    daemon: Callable[..., Daemon], collector: Collector, write_config: Callable[..., Path]
) -> None:
    from bridge.config.loader import load_config
    from bridge.errors import ConfigError

    bad = write_config([rule_notifying({"url": "no scheme", "when": "state ==", "title": "{{ x"})])
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    problems = "\n".join(caught.value.problems)
    assert "notify.0.url" in problems
    assert "notify.0.when" in problems
    assert "notify.0.title" in problems
    daemon([rule_notifying({"url": "tgram://123456:SECRETBOTTOKEN/987"})])
    info = collector.wait_for("llm2mqtt/bridge/info")[0]
    assert "SECRETBOTTOKEN" not in info.payload.decode()
    assert info.json()["config"]["rules"][0]["notify"][0]["url"] == "tgram://**********"
