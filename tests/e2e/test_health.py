"""`llm2mqtt health` and systemd's notifications against a running daemon."""

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.pipeline import heartbeat
from tests.e2e.test_cli import cli
from tests.support.mqtt_helpers import Daemon
from tests.support.systemd_notify import notify_socket


@pytest.mark.broker
def test_running_daemon_is_healthy_and_tells_systemd(
    daemon: Callable[..., Daemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with notify_socket(tmp_path) as (address, receive):
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        process = daemon()
        assert receive() == "READY=1"
        assert receive() == "WATCHDOG=1"
        done = cli("health", "-c", str(process.config))
        assert done.returncode == 0, done.stderr + process.output()
        assert "alive" in done.stdout
        assert "broker connected" in done.stdout
        beat = json.loads((process.config.parent / "data" / heartbeat.FILE_NAME).read_text())
        assert process.proc is not None
        assert beat["pid"] == process.proc.pid
        assert process.stop() == 0
        while receive() != "STOPPING=1":  # a last WATCHDOG=1 may come first; times out if never
            pass
    done = cli("health", "-c", str(process.config))
    assert done.returncode == 1
    assert "not running" in done.stderr


@pytest.mark.broker
def test_a_stopped_loop_makes_health_fail(daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    """SIGSTOP freezes the daemon as a stuck event loop would: its heartbeat goes stale."""
    process = daemon()
    path = process.config.parent / "data" / heartbeat.FILE_NAME
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), process.output()
    # Pretend the last beat is old (waiting 30 s of real time would be a slow test).
    assert process.proc is not None
    process.proc.send_signal(signal.SIGSTOP)
    try:
        beat = json.loads(path.read_text())
        heartbeat.write(path, {k: v for k, v in beat.items() if k not in ("ts", "pid")}, time.time() - 60)
        done = cli("health", "-c", str(process.config))
        assert done.returncode == 1
        assert "stuck" in done.stderr
    finally:
        process.proc.send_signal(signal.SIGCONT)
    # Running again, it writes a fresh beat within BEAT_EVERY.
    deadline = time.monotonic() + heartbeat.BEAT_EVERY + 5
    while cli("health", "-c", str(process.config)).returncode != 0:
        assert time.monotonic() < deadline, process.output()
        time.sleep(0.5)
