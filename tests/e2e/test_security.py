"""Safe on a home network with producers in the cloud: the real daemon, broker and stand-ins."""

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import LOCK_RULE, TOPIC_RULE
from tests.e2e.test_todo_end_to_end import RULE as TODO_RULE
from tests.e2e.test_todo_end_to_end import model as todo_model
from tests.support.aws_helpers import Moto, moto_server
from tests.support.camera import Camera
from tests.support.mqtt_helpers import Collector, Daemon, free_port
from tests.support.ollama_standin import OllamaStandin
from tests.support.samples import jpeg

pytestmark = pytest.mark.broker

NOT_ALLOWED = "image_url is not allowed (see image_url.allow in config.yaml)"


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    with moto_server() as server:
        yield server


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
    daemon, collector: Collector, camera: Camera, moto: Moto, ollama: OllamaStandin
) -> None:
    queue, _ = moto.queue()
    _online(daemon, collector, [LOCK_RULE], aws=_aws(moto, queue))
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


def _aws(moto: Moto, queue: str, **extra: Any) -> dict[str, Any]:
    return {"endpoint_url": moto.url, "region": "us-east-1", "queue_url": queue, "wait_time": 1, **extra}


def _request(collector: Collector, topic: str, payload: str, response_topic: str) -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = response_topic
    props.CorrelationData = b"c"
    collector.publish(topic, payload, props=props)


REFUSED_REPLIES = [
    "homeassistant/binary_sensor/evil/config",  # a discovery config
    "llm2mqtt/bridge/state",  # the bridge's own
    "llm2mqtt/front_door_lock/run",  # another rule's job
    "cameras/front_door/snapshot",  # a rule's input
    "zigbee2mqtt/front_door_lock/set",  # a device command, denied by the user
]


def test_reply_topics_that_reach_the_bridge_or_devices_are_refused(
    daemon, broker, collector: Collector, ollama: OllamaStandin
) -> None:
    watcher = Collector(broker.port, ["#"])
    try:
        process = _online(daemon, collector, mqtt={"reply_deny": ["zigbee2mqtt/#"]})
        for topic in REFUSED_REPLIES:
            _request(collector, "llm2mqtt/message_topic/run", f"shopping for {topic}", topic)
        _request(collector, "llm2mqtt/message_topic/run", "chores", "replies/ok")
        errors = collector.wait_for("llm2mqtt/message_topic/error", count=len(REFUSED_REPLIES))
        assert sorted(e.json()["error"].split("'")[1] for e in errors) == sorted(REFUSED_REPLIES)
        assert all("refused" in e.json()["error"] for e in errors)
        collector.wait_for("replies/ok")
        process.stop()  # the refused requests were acknowledged: a new session gets none again
        process.start()
        collector.wait_for("llm2mqtt/bridge/state", count=3)  # online, offline, online
        time.sleep(1)
        assert len(collector.on("llm2mqtt/message_topic/error")) == len(REFUSED_REPLIES)
        for topic in REFUSED_REPLIES:
            assert not [m for m in watcher.on(topic) if b"job_id" in m.payload], topic
    finally:
        watcher.close()


@pytest.mark.aws
def test_sqs_replies_only_where_aws_reply_topics_allows(
    daemon, collector: Collector, moto: Moto, ollama: OllamaStandin
) -> None:
    queue, _ = moto.queue()
    _online(daemon, collector, [TOPIC_RULE], aws=_aws(moto, queue, reply_topics=["replies/allowed/"]))
    moto.send(queue, {"rule": "message_topic", "id": "r1", "text": "shopping", "reply": "replies/phone"})
    moto.send(queue, {"rule": "message_topic", "id": "r2", "text": "chores", "reply": moto.topic_arn("x")})
    moto.send(queue, {"rule": "message_topic", "id": "r3", "text": "other", "reply": "replies/allowed/a"})
    errors = collector.wait_for("llm2mqtt/message_topic/error", count=2)
    assert all("aws.reply_topics" in e.json()["error"] for e in errors)
    assert collector.wait_for("replies/allowed/a")[0].json()["id"] == "r3"
    assert not collector.on("replies/phone")


def test_credentials_in_urls_are_never_shown(
    daemon, broker, collector: Collector, camera: Camera, ollama: OllamaStandin
) -> None:
    everything = Collector(broker.port, ["#"])
    try:
        camera.mode = "404"
        snapshot = camera.url.replace("http://", "http://cam:CamPw2@") + "?password=CamPw3"
        lock = {**LOCK_RULE, "snapshot": {"url": snapshot, "timeout": "2s"}}
        port = ollama.url.rsplit(":", 1)[1]
        process = _online(
            daemon,
            collector,
            [lock, TOPIC_RULE],
            ollama={"url": f"http://llm:OllamaPw1@127.0.0.1:{int(port) + 1}"},  # nobody there
            log_level="info",
        )
        collector.publish("llm2mqtt/front_door_lock/check", "")
        collector.publish("llm2mqtt/message_topic/run", "milk")
        collector.wait_for("llm2mqtt/front_door_lock/error")
        # Ollama being away holds the job (no error); the log and bridge/health name the URL.
        deadline = time.monotonic() + 15
        while "cannot reach Ollama at" not in process.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "cannot reach Ollama at http://**********@127.0.0.1" in process.output()
        time.sleep(0.3)
        process.stop()
        shown = process.output() + "".join(m.payload.decode(errors="replace") for m in everything.messages)
        for secret in ("OllamaPw1", "CamPw2", "CamPw3"):
            at = shown.find(secret)
            assert at < 0, shown[max(0, at - 300) : at + 50]
        assert "password=**********" in shown
    finally:
        everything.close()


def test_the_data_directory_is_private(daemon, daemon_config, collector: Collector, ollama) -> None:
    """Door pictures and notes are readable by the daemon's user only, files made earlier too."""
    data = daemon_config().parent / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    old = data / "schedules.json"
    old.write_text("{}")
    old.chmod(0o644)
    todo = {"name": "todo_note", "handler": "todo_match", "model": "m", "prompt": "What is this note?"}
    _online(daemon, collector, [LOCK_RULE, todo])
    collector.publish("llm2mqtt/front_door_lock/run", jpeg(200))
    collector.wait_for("llm2mqtt/front_door_lock/result")
    assert data.stat().st_mode & 0o777 == 0o700
    modes = {str(path.relative_to(data)): path.stat().st_mode & 0o777 for path in data.rglob("*")}
    assert {"journal.sqlite3", "journal.sqlite3-wal", "todo.sqlite3", "schedules.json"} <= set(modes)
    assert {mode for name, mode in modes.items() if (data / name).is_file()} == {0o600}, modes
    assert {mode for name, mode in modes.items() if (data / name).is_dir()} <= {0o700}, modes


def test_todo_confirm_holds_named_actions_for_a_person(
    daemon, collector: Collector, ollama: OllamaStandin
) -> None:
    ollama.responder = todo_model
    port = free_port()
    _online(
        daemon, collector, [TODO_RULE], http={"enabled": True, "port": port}, todo={"confirm": ["complete"]}
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/todo", timeout=5) as api:
        milk = api.post("/tasks", json={"title": "牛乳を買う", "genre": "shopping"}).json()["uid"]
        collector.publish("llm2mqtt/todo/note", "done: 牛乳")
        proposal = collector.wait_for("llm2mqtt/todo/confirm")[0].json()
        assert (proposal["proposed"], proposal["uid"]) == ("complete", milk)
        assert "todo.confirm" in proposal["why"]
        assert api.get(f"/tasks/{milk}").json()["status"] == "needs_action"  # not applied
        api.post(f"/tasks/{milk}/complete")  # the person confirms
        assert api.get(f"/tasks/{milk}").json()["status"] == "completed"
        collector.publish("llm2mqtt/todo/note", "ぎゅうにゅう買っといて")  # update: not listed
        update = collector.wait_for("llm2mqtt/todo/event", where=lambda m: m.json().get("action") == "update")
        assert update[0].json()["uid"] == milk
