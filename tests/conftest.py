"""Shared fixtures: a real Mosquitto per test, the Ollama stand-in, and config files in tmp_path."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.mqtt_helpers import Collector, Daemon, Mosquitto
from tests.support.ollama_standin import OllamaStandin

LOCK_RULE: dict[str, Any] = {
    "name": "front_door_lock",
    "handler": "yes_no",
    "model": "qwen2.5vl:3b",
    "prompt": "Is the thumb-turn in the locked position?",
    "labels": {"true": "locked", "false": "unlocked"},
    "inputs": [{"mqtt": "cameras/front_door/snapshot"}],
    "image": {"max_side": 256},
    "keep_alive": "10m",
}
TOPIC_RULE: dict[str, Any] = {
    "name": "message_topic",
    "handler": "classify",
    "model": "qwen2.5:3b",
    "prompt": "Which area is this message about?",
    "labels": ["shopping", "chores", "security", "other"],
    "inputs": [{"mqtt": "home/messages/in"}],
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers by folder: tests/unit (in-process, fast) and tests/e2e (real daemon and servers)."""
    here = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(here).parts[0]
        if folder in ("unit", "e2e"):
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ollama() -> Iterator[OllamaStandin]:
    with OllamaStandin() as standin:
        yield standin


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write config.yaml and rule files; returns the config path."""

    def write(rules: list[dict[str, Any]] | None = None, **settings: Any) -> Path:
        folder = tmp_path / "conf"
        (folder / "rules").mkdir(parents=True, exist_ok=True)
        for old in (folder / "rules").glob("*.yaml"):
            old.unlink()
        for rule in [LOCK_RULE, TOPIC_RULE] if rules is None else rules:
            (folder / "rules" / f"{rule['name']}.yaml").write_text(yaml.safe_dump(rule, allow_unicode=True))
        (folder / "config.yaml").write_text(yaml.safe_dump(settings, allow_unicode=True))
        return folder / "config.yaml"

    return write


@pytest.fixture
def daemon_config(
    write_config: Callable[..., Path], broker: Mosquitto, ollama: OllamaStandin
) -> Callable[..., Path]:
    """A config that points at this test's broker and stand-in, with fast retries."""

    def make(rules: list[dict[str, Any]] | None = None, **overrides: Any) -> Path:
        settings: dict[str, Any] = {
            "mqtt": {"url": broker.url, "client_id": "llm2mqtt-test", "reconnect_max": 1},
            "ollama": {"url": ollama.url, "retries": 1, "retry_backoff": 0.05, "timeout": 10},
            "journal": {"retry_delay": 0.2, "dedupe_window": 10},
            "shutdown_grace": 5,
            "stats_interval": 0.3,
            "log_level": "debug",
        }
        for key, value in overrides.items():
            if isinstance(value, dict):
                settings.setdefault(key, {}).update(value)
            else:
                settings[key] = value
        return write_config(rules, **settings)

    return make


@pytest.fixture
def collector(broker: Mosquitto) -> Iterator[Collector]:
    client = Collector(broker.port, ["llm2mqtt/#", "replies/#"])
    yield client
    client.close()


@pytest.fixture
def daemon(daemon_config: Callable[..., Path]) -> Iterator[Callable[..., Daemon]]:
    """Start `llm2mqtt run` processes; each is stopped at the end of the test."""
    started: list[Daemon] = []

    def start(rules: list[dict[str, Any]] | None = None, **overrides: Any) -> Daemon:
        process = Daemon(daemon_config(rules, **overrides))
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc is not None:
            process.kill()
