"""`llm2mqtt check --live`: one line per problem, never a traceback; snapshot URLs, the to-do
entity and a broker that would drop a burst are all looked at."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LOCK_RULE, TOPIC_RULE
from tests.e2e.test_cli import cli
from tests.support.camera import Camera
from tests.support.ha_todo_standin import HaTodoStandin
from tests.support.mqtt_helpers import Mosquitto
from tests.support.ollama_standin import OllamaStandin
from tests.support.samples import jpeg

pytestmark = pytest.mark.broker


@pytest.fixture
def default_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "default-mosquitto", defaults=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def camera() -> Iterator[Camera]:
    cam = Camera(jpeg(200))
    yield cam
    cam.close()


def test_a_port_that_is_not_http_is_one_line_not_a_traceback(write_config, broker: Mosquitto) -> None:
    path = write_config(mqtt={"url": broker.url}, ollama={"url": f"http://127.0.0.1:{broker.port}"})
    done = cli("check", "--live", "-c", str(path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"cannot talk to Ollama at http://127.0.0.1:{broker.port}" in done.stderr


def test_snapshot_urls_are_fetched_with_status_and_content_type(
    write_config, broker: Mosquitto, ollama: OllamaStandin, camera: Camera
) -> None:
    def scheduled(name: str, url: str) -> dict:
        return {
            **LOCK_RULE,
            "name": name,
            "schedule": {"every": "10m"},
            "snapshot": {"url": url, "token": "t"},
        }

    rules = [
        scheduled("door_ok", camera.url),
        scheduled("door_closed_port", "http://127.0.0.1:9/snap.jpg"),
        TOPIC_RULE,
    ]
    path = write_config(rules, mqtt={"url": broker.url}, ollama={"url": ollama.url})
    camera.mode = "image"
    done = cli("check", "--live", "-c", str(path))
    assert done.returncode == 1
    assert f"door_ok.yaml: snapshot.url {camera.url}: 200, image/jpeg" in done.stdout
    assert camera.auth[0] == "Bearer t"
    assert "door_closed_port.yaml: snapshot.url http://127.0.0.1:9/snap.jpg cannot be reached" in done.stderr
    assert "Traceback" not in done.stderr
    camera.mode = "404"
    done = cli("check", "--live", "-c", str(path))
    assert f"door_ok.yaml: snapshot.url {camera.url} answered HTTP 404" in done.stderr
    camera.mode = "html"
    done = cli("check", "--live", "-c", str(path))
    assert "door_ok.yaml: snapshot.url" in done.stderr
    assert "answered 200 with text/html, not an image" in done.stderr


def test_home_assistant_todo_entity_is_reached(
    write_config, broker: Mosquitto, ollama: OllamaStandin
) -> None:
    with HaTodoStandin() as ha:
        ha.items.append({"summary": "milk", "uid": "u1", "status": "needs_action"})

        def check(**todo: str) -> tuple[int, str, str]:
            settings = {"url": ha.url, "token": "good-token", "entity_id": "todo.shopping", **todo}
            path = write_config(
                mqtt={"url": broker.url},
                ollama={"url": ollama.url},
                todo={"backend": "homeassistant", "homeassistant": settings},
            )
            done = cli("check", "--live", "-c", str(path))
            return done.returncode, done.stdout, done.stderr

        code, out, _ = check()
        assert code == 0
        assert f"todo.homeassistant: todo.shopping at {ha.url}: reachable, 1 item(s)" in out
        code, _, err = check(token="wrong")
        assert code == 1
        assert "refused the token (401)" in err
        code, _, err = check(entity_id="todo.nothing")
        assert code == 1
        assert "todo.nothing" in err
        assert "Traceback" not in err


def test_a_broker_that_would_drop_a_burst_is_warned_about(
    write_config, default_broker: Mosquitto, ollama: OllamaStandin
) -> None:
    v5 = write_config(mqtt={"url": default_broker.url}, ollama={"url": ollama.url})
    done = cli("check", "--live", "-c", str(v5))
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr  # MQTT 5: the receive maximum keeps a burst moving
    v311 = write_config(mqtt={"url": default_broker.url, "protocol": "3.1.1"}, ollama={"url": ollama.url})
    done = cli("check", "--live", "-c", str(v311))
    assert done.returncode == 0, done.stderr
    assert "warning: the broker dropped" in done.stderr
    assert "max_queued_messages" in done.stderr
