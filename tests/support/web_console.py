"""A running daemon with the web console on, for the API and browser tests."""

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import LOCK_RULE, TOPIC_RULE
from tests.support.camera import Camera
from tests.support.mqtt_helpers import Collector, Daemon, Mosquitto, free_port, wait_for_port
from tests.support.ollama_standin import OllamaStandin
from tests.support.samples import jpeg

TOKEN = "console-token-for-tests-0123"
NOTE_RULE: dict[str, Any] = {
    "name": "todo_note",
    "handler": "todo_match",
    "model": "qwen2.5:3b",
    "prompt": "Which task does this note change?",
    "genres": ["shopping", "chores"],
}


@dataclass
class Console:
    """The daemon, its broker, its stand-in and the console's address."""

    url: str
    port: int
    broker: Mosquitto
    ollama: OllamaStandin
    daemon: Daemon
    data_dir: Path
    token: str | None
    camera: Camera

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def collector(self) -> Collector:
        return Collector(self.broker.port, ["llm2mqtt/#"])


@contextmanager
def console_daemon(
    folder: Path, *, host: str = "127.0.0.1", token: str | None = None, http: dict[str, Any] | None = None
) -> Iterator[Console]:
    """Mosquitto, the Ollama stand-in and `llm2mqtt run` with `http.enabled`."""
    broker = Mosquitto(folder / "mosquitto")
    broker.start()
    standin = OllamaStandin().start()
    camera = Camera(jpeg(220))
    port = free_port()
    rules = folder / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    gate = {
        "name": "gate",
        "handler": "yes_no",
        "model": "qwen2.5vl:3b",
        "prompt": "Is the gate open?",
        "labels": {"true": "open", "false": "closed"},
        "schedule": {"every": "1d"},
        "snapshot": {"url": camera.url},
    }
    for rule in (LOCK_RULE, TOPIC_RULE, NOTE_RULE, gate):
        (rules / f"{rule['name']}.yaml").write_text(yaml.safe_dump(rule, allow_unicode=True))
    settings: dict[str, Any] = {
        "mqtt": {"url": broker.url, "client_id": f"llm2mqtt-web-{port}", "reconnect_max": 1},
        "ollama": {"url": standin.url, "retries": 1, "retry_backoff": 0.05, "timeout": 10},
        "journal": {"retry_delay": 0.2, "dedupe_window": 10},
        "http": {
            "enabled": True,
            "host": host,
            "port": port,
            **({"token": token} if token else {}),
            **(http or {}),
        },
        "data_dir": str(folder / "data"),
        "shutdown_grace": 5,
        "stats_interval": 0.3,
        "log_level": "debug",
    }
    if token:
        settings["http"]["token"] = token
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    daemon = Daemon(config)
    daemon.start()
    try:
        wait_for_port(port, timeout=20)
        console = Console(
            url=f"http://127.0.0.1:{port}",
            port=port,
            broker=broker,
            ollama=standin,
            daemon=daemon,
            data_dir=folder / "data",
            token=token,
            camera=camera,
        )
        wait_online(console)
        yield console
    finally:
        if daemon.proc is not None:
            daemon.stop()
        standin.stop()
        camera.close()
        broker.stop()


def wait_online(console: Console, timeout: float = 20) -> None:
    """Until the daemon reports its broker link up."""
    deadline = time.monotonic() + timeout
    with console.client() as api:
        while time.monotonic() < deadline:
            if api.get("/api/health").json()["broker"]["connected"]:
                return
            time.sleep(0.1)
    raise TimeoutError(f"the daemon did not connect:\n{console.daemon.output()[-3000:]}")


def lan_address() -> str | None:
    """This machine's address on its network (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address
