"""The heartbeat file and systemd's notifications, in-process."""

from pathlib import Path

from bridge.pipeline import heartbeat
from tests.support.systemd_notify import notify_socket


def test_verdict_fresh_stale_missing_and_garbled(tmp_path: Path) -> None:
    path = tmp_path / heartbeat.FILE_NAME
    alive, message = heartbeat.verdict(path, now=1000.0)
    assert not alive
    assert "no heartbeat" in message
    heartbeat.write(path, {"mqtt": True, "load": 2}, now=1000.0)
    assert not (tmp_path / f"{heartbeat.FILE_NAME}.tmp").exists()
    alive, message = heartbeat.verdict(path, now=1000.0 + heartbeat.STALE_AFTER - 1)
    assert alive
    assert "broker connected" in message
    assert "2 job(s) waiting or running" in message
    alive, message = heartbeat.verdict(path, now=1000.0 + heartbeat.STALE_AFTER + 1)
    assert not alive
    assert "stuck" in message
    path.write_text("{not json")
    assert heartbeat.verdict(path, now=1000.0)[0] is False


def test_notify_sends_datagrams_to_the_socket_systemd_names(tmp_path: Path) -> None:
    with notify_socket(tmp_path) as (address, receive):
        assert heartbeat.notify("READY=1", {"NOTIFY_SOCKET": address})
        assert receive() == "READY=1"
    assert not heartbeat.notify("READY=1", {})  # not under systemd: nothing to do
    assert not heartbeat.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})
